//! The subject of a DER X.509 certificate the TLS layer already verified:
//! its common names (CN) and organisations (O), read with a small strict DER
//! walker (only the fields needed; anything unexpected is an error).

/// What a client certificate's subject says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    /// Every CN attribute, in order.
    pub common_names: Vec<String>,
    /// Every O attribute, in order.
    pub organizations: Vec<String>,
}

/// Why a certificate's subject could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Not the DER structure of an X.509 certificate.
    #[error("client certificate: malformed DER ({0})")]
    Malformed(&'static str),
    /// A CN or O is not a UTF8String, PrintableString or IA5String, or not UTF-8.
    #[error("client certificate: a subject CN or O is not a UTF-8, printable or IA5 string")]
    UnsupportedString,
}

/// One DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertificateError> {
    let bad = CertificateError::Malformed;
    let (&tag, rest) = input.split_first().ok_or(bad("truncated tag"))?;
    let (&first, mut rest) = rest.split_first().ok_or(bad("truncated length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad("length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(bad("truncated value"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect<'a>(
    tag: u8,
    input: &'a [u8],
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CertificateError> {
    match tlv(input)? {
        (t, content, rest) if t == tag => Ok((content, rest)),
        _ => Err(CertificateError::Malformed(what)),
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;

fn text(value: &[u8]) -> Result<String, CertificateError> {
    let (tag, content, _) = tlv(value)?;
    if ![UTF8_STRING, PRINTABLE_STRING, IA5_STRING].contains(&tag) {
        return Err(CertificateError::UnsupportedString);
    }
    String::from_utf8(content.to_vec()).map_err(|_| CertificateError::UnsupportedString)
}

/// The subject of a DER X.509 certificate.
pub fn subject(der: &[u8]) -> Result<Subject, CertificateError> {
    let (cert, _) = expect(SEQUENCE, der, "certificate")?;
    let (mut tbs, _) = expect(SEQUENCE, cert, "tbsCertificate")?;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, rest) = tlv(tbs)?;
    tbs = if tag == EXPLICIT_VERSION {
        tlv(rest)?.2
    } else {
        rest
    };
    for _ in 0..3 {
        tbs = tlv(tbs)?.2; // signature, issuer, validity
    }
    let (mut name, _) = expect(SEQUENCE, tbs, "subject")?;
    let mut subject = Subject::default();
    while !name.is_empty() {
        let (mut rdn, rest) = expect(SET, name, "relative distinguished name")?;
        name = rest;
        while !rdn.is_empty() {
            let (atv, rest) = expect(SEQUENCE, rdn, "attribute")?;
            rdn = rest;
            let (oid, value) = expect(OID, atv, "attribute type")?;
            if oid == COMMON_NAME {
                subject.common_names.push(text(value)?);
            } else if oid == ORGANIZATION {
                subject.organizations.push(text(value)?);
            }
        }
    }
    Ok(subject)
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

    fn atv(oid: &[u8], tag: u8, value: &str) -> Vec<u8> {
        let mut atv = der(OID, oid);
        atv.extend(der(tag, value.as_bytes()));
        der(SEQUENCE, &atv)
    }

    fn name(attributes: &[Vec<u8>]) -> Vec<u8> {
        let rdns: Vec<u8> = attributes.iter().flat_map(|a| der(SET, a)).collect();
        der(SEQUENCE, &rdns)
    }

    fn certificate(subject_name: Vec<u8>) -> Vec<u8> {
        let mut tbs = der(EXPLICIT_VERSION, &der(0x02, &[2]));
        tbs.extend(der(0x02, &[1, 2, 3]));
        tbs.extend(der(SEQUENCE, &der(OID, &[0x2a, 0x86, 0x48])));
        tbs.extend(name(&[atv(COMMON_NAME, UTF8_STRING, "Dora Test CA")]));
        tbs.extend(der(SEQUENCE, &[]));
        tbs.extend(subject_name);
        tbs.extend(der(SEQUENCE, &[0; 200]));
        der(SEQUENCE, &der(SEQUENCE, &tbs))
    }

    #[test]
    fn reads_the_subject_not_the_issuer() {
        let cert = certificate(name(&[
            atv(ORGANIZATION, PRINTABLE_STRING, "org-1"),
            atv(COMMON_NAME, UTF8_STRING, "agent-42"),
        ]));
        let s = subject(&cert).unwrap();
        assert_eq!(s.common_names, ["agent-42"]);
        assert_eq!(s.organizations, ["org-1"]);
        assert!(subject(&cert[..10]).is_err());
    }

    #[test]
    fn every_common_name_is_reported() {
        let cert = certificate(name(&[
            atv(COMMON_NAME, UTF8_STRING, "agent-1"),
            atv(COMMON_NAME, UTF8_STRING, "agent-2"),
        ]));
        assert_eq!(subject(&cert).unwrap().common_names, ["agent-1", "agent-2"]);
    }

    #[test]
    fn other_string_types_are_refused() {
        let bmp = 0x1e;
        let cert = certificate(name(&[atv(COMMON_NAME, bmp, "a")]));
        assert_eq!(subject(&cert), Err(CertificateError::UnsupportedString));
    }
}
