//! Server TLS and client-certificate identity: builds tonic's TLS config from
//! the PEM files in settings, and reads the subject common name (the agent id)
//! out of a verified client certificate.

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::settings::GatewaySettings;

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `tls_cert` / `tls_key` is set, or a client CA without them.
    #[error("gateway TLS: {0}")]
    Incomplete(&'static str),
    /// A PEM file could not be read.
    #[error("gateway TLS: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The server TLS config, or `None` for plaintext.
pub fn server_config(s: &GatewaySettings) -> Result<Option<ServerTlsConfig>, TlsError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    match (&s.tls_cert, &s.tls_key) {
        (None, None) if s.tls_client_ca.is_some() => Err(TlsError::Incomplete(
            "tls_client_ca needs tls_cert and tls_key",
        )),
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => {
            Err(TlsError::Incomplete("set both tls_cert and tls_key"))
        }
        (Some(cert), Some(key)) => {
            let mut cfg =
                ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
            if let Some(ca) = &s.tls_client_ca {
                // Clients without a certificate may still come in with a bearer token.
                cfg = cfg
                    .client_ca_root(Certificate::from_pem(read(ca)?))
                    .client_auth_optional(true);
            }
            Ok(Some(cfg))
        }
    }
}

/// One DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The subject common name of a DER X.509 certificate.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
        tbs = tlv(tbs)?.2; // serial
    } else {
        tbs = rest; // that was the serial
    }
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // signature, issuer, validity
    }
    let (SEQUENCE, mut subject, _) = tlv(tbs)? else {
        return None;
    };
    let mut cn = None;
    while !subject.is_empty() {
        let (SET, mut rdn, rest) = tlv(subject)? else {
            return None;
        };
        subject = rest;
        while !rdn.is_empty() {
            let (SEQUENCE, atv, rest) = tlv(rdn)? else {
                return None;
            };
            rdn = rest;
            let (OID, oid, value) = tlv(atv)? else {
                return None;
            };
            if oid == COMMON_NAME_OID {
                let (_, text, _) = tlv(value)?;
                cn = Some(String::from_utf8(text.to_vec()).ok()?);
            }
        }
    }
    cn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if content.len() < 0x80 {
            v.push(content.len() as u8);
        } else {
            v.extend([0x82, (content.len() >> 8) as u8, content.len() as u8]);
        }
        v.extend_from_slice(content);
        v
    }

    fn name(cn: &str) -> Vec<u8> {
        let mut atv = der(OID, COMMON_NAME_OID);
        atv.extend(der(0x0c, cn.as_bytes()));
        der(SEQUENCE, &der(SET, &der(SEQUENCE, &atv)))
    }

    #[test]
    fn reads_the_subject_not_the_issuer() {
        let mut tbs = der(0xa0, &der(0x02, &[2]));
        tbs.extend(der(0x02, &[1, 2, 3]));
        tbs.extend(der(SEQUENCE, &der(OID, &[0x2a, 0x86, 0x48])));
        tbs.extend(name("Dora Test CA"));
        tbs.extend(der(SEQUENCE, &[]));
        tbs.extend(name("agent-42"));
        tbs.extend(der(SEQUENCE, &[0; 200]));
        let cert = der(SEQUENCE, &der(SEQUENCE, &tbs));
        assert_eq!(subject_common_name(&cert).as_deref(), Some("agent-42"));
        assert_eq!(subject_common_name(&cert[..10]), None);
    }
}
