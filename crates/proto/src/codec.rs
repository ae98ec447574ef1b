//! The prost codec with one change: a request that does not decode (e.g. a
//! `string` field holding invalid UTF-8) is answered with INVALID_ARGUMENT
//! naming the field, instead of tonic's default INTERNAL. Its buffers start at
//! 1 KiB instead of tonic's 8 KiB (they grow as a message needs): the
//! platform's messages are small, and two 8 KiB buffers per unary call, one
//! to decode and one to encode, cost more in the allocator than the call's
//! own work.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The buffers each call's encoder and decoder start with.
fn buffers() -> BufferSettings {
    // 32 KiB: tonic's default yield threshold (server streams batch up to it).
    BufferSettings::new(1024, 32 * 1024)
}

/// A [`Codec`] for prost messages whose decode errors are INVALID_ARGUMENT.
///
/// prost's error text carries the message and field path, e.g.
/// `PublishEventRequest.message: invalid string value: data is not UTF-8 encoded`.
#[derive(Debug, Clone)]
pub struct FieldNamingCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for FieldNamingCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for FieldNamingCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = FieldNamingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        FieldNamingDecoder {
            inner: ProstDecoder::new(buffers()),
        }
    }
}

/// The decoder of [`FieldNamingCodec`].
#[derive(Debug, Clone)]
pub struct FieldNamingDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for FieldNamingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|s| {
            if s.code() == tonic::Code::Internal {
                Status::invalid_argument(s.message().to_string())
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
