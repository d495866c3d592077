//! Timestamps are carried as milliseconds since the Unix epoch (decided by the controller before
//! a command is proposed, so the state machine never reads a clock) and rendered as RFC 3339.

/// Milliseconds since the Unix epoch, now (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Renders epoch milliseconds as RFC 3339 in UTC with millisecond precision,
/// e.g. `2026-11-21T22:00:00.123Z`.
pub fn rfc3339_ms(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        epoch_ms % 1000
    )
}

/// Renders epoch milliseconds the way the user's guide prints dates: `2011/07/20 16:37:10` (UTC).
pub fn guide_datetime(epoch_ms: u64) -> String {
    let s = rfc3339_ms(epoch_ms);
    format!("{} {}", s[..10].replace('-', "/"), &s[11..19])
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        // 2011-07-20 16:37:10 UTC, the date in the user's guide.
        assert_eq!(rfc3339_ms(1_311_179_830_000), "2011-07-20T16:37:10.000Z");
        assert_eq!(guide_datetime(1_311_179_830_000), "2011/07/20 16:37:10");
        // A leap day.
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
