//! Sizes and durations as users write them (`16MiB`, `30m`): shared by the command
//! line, the config file and the fuzz targets.

use std::time::Duration;

/// A size or duration that does not parse; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// `30m`, `2h`, `1d`, `45s` or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| UnitError(format!("invalid duration {s:?}: use e.g. 30m, 2h, 1d")))?;
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(UnitError(format!(
                "invalid duration unit in {s:?}: use s, m, h or d"
            )))
        }
    };
    // Unchecked, `--older-than 213503982334602d` wrapped around to 17 hours.
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| UnitError(format!("duration {s:?} is too large")))?;
    Ok(Duration::from_secs(secs))
}

/// A multipart part size: `16MiB`, `1GiB`, `8388608`; at least S3's 5 MiB minimum.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| UnitError(format!("invalid size {s:?}: use e.g. 16MiB")))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(UnitError(format!(
                "invalid size unit in {s:?}: use B, KiB, MiB or GiB"
            )))
        }
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| UnitError(format!("part size {s:?} is too large")))?;
    if v < 5 << 20 {
        return Err(UnitError(format!(
            "part size {s} is below S3's 5 MiB minimum"
        )));
    }
    Ok(v)
}

/// A size as [`parse_size`] reads it back (`16MiB`, `1GiB`, or bytes).
pub fn format_size(n: u64) -> String {
    if n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size(&format_size(1 << 30)).unwrap(), 1 << 30);
        assert!(parse_size("1KiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert!(parse_duration("213503982334602d").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
