//! The DORA articles a gap finding may name: Articles 5 to 45 of Regulation
//! (EU) 2022/2554 (ICT risk management, incident reporting, resilience
//! testing, third-party risk, information sharing), written as a number (`11`)
//! or as text (`"11"`, `"Art. 11"`, `"Article 11(2)"`).

use std::ops::RangeInclusive;

use serde_json::Value;

/// The articles of Regulation (EU) 2022/2554 a gap finding may name.
pub const DORA_ARTICLES: RangeInclusive<u64> = 5..=45;

/// The article number `value` names, or why it names none of [`DORA_ARTICLES`].
pub fn dora_article(value: &Value) -> Result<u64, String> {
    let number = match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not an article number"))?,
        Value::String(s) => article_in_text(s).ok_or_else(|| {
            format!("{s:?} does not name an article (e.g. 11, \"Art. 11\", \"Article 11(2)\")")
        })?,
        other => return Err(format!("must be an article number or text, not {other}")),
    };
    if DORA_ARTICLES.contains(&number) {
        Ok(number)
    } else {
        Err(format!(
            "Article {number} is not one of Articles {}-{} of Regulation (EU) 2022/2554 (DORA)",
            DORA_ARTICLES.start(),
            DORA_ARTICLES.end()
        ))
    }
}

/// `11`, `Art. 11`, `Art 11`, `Article 11`, `Article 11(2)(a)` -> 11.
fn article_in_text(text: &str) -> Option<u64> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let rest = ["article", "art.", "art"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .map_or(t, |r| &t[t.len() - r.len()..])
        .trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let (number, tail) = rest.split_at(digits);
    (tail.is_empty() || tail.starts_with('(')).then(|| number.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn articles_five_to_forty_five_in_every_spelling() {
        for v in [
            json!(11),
            json!("11"),
            json!("Art. 11"),
            json!("art 11"),
            json!("Article 11(2)(a)"),
            json!(" ARTICLE 11 "),
        ] {
            assert_eq!(dora_article(&v), Ok(11), "{v}");
        }
        assert_eq!(dora_article(&json!(5)), Ok(5));
        assert_eq!(dora_article(&json!("Art. 45")), Ok(45));
    }

    #[test]
    fn articles_outside_the_range_or_unreadable_are_refused() {
        for v in [
            json!(4),
            json!(46),
            json!("Art. 64"),
            json!(0),
            json!("Article 1000"),
        ] {
            let e = dora_article(&v).unwrap_err();
            assert!(
                e.contains("Articles 5-45") || e.contains("does not name"),
                "{v}: {e}"
            );
        }
        for v in [
            json!(-3),
            json!(11.5),
            json!("eleven"),
            json!("11a"),
            json!(""),
            json!(null),
            json!([11]),
        ] {
            assert!(dora_article(&v).is_err(), "{v}");
        }
    }
}
