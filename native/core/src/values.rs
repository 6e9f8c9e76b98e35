//! Value rules of the contract (section 1): trimming, dates, timestamps, money, quantity,
//! status. Each parser takes trimmed bytes and returns `None` when the value does not parse.

/// Bytes trimmed from both ends of every value and header name.
#[inline]
pub fn is_trim(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// The value without surrounding spaces, tabs, CR and LF.
#[inline]
pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_trim(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_trim(*last) {
            break;
        }
        v = rest;
    }
    v
}

#[inline]
fn digits<const N: usize>(v: &[u8]) -> Option<u32> {
    if v.len() != N {
        return None;
    }
    let mut n = 0u32;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    Some(n)
}

/// Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

/// `YYYY-MM-DD`, a real calendar date in the years 0001-9999, as days since 1970-01-01.
pub fn parse_date(v: &[u8]) -> Option<i32> {
    if v.len() != 10 || v[4] != b'-' || v[7] != b'-' {
        return None;
    }
    let year = digits::<4>(&v[0..4])?;
    let month = digits::<2>(&v[5..7])?;
    let day = digits::<2>(&v[8..10])?;
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    i32::try_from(days_from_civil(i64::from(year), month, day)).ok()
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// 0001-01-01T00:00:00Z and the first instant after 9999-12-31, in microseconds since 1970.
const MIN_INSTANT: i64 = -719_162 * MICROS_PER_DAY;
const END_INSTANT: i64 = 2_932_897 * MICROS_PER_DAY;

fn hour(v: &[u8]) -> Option<i64> {
    digits::<2>(v).filter(|h| *h <= 23).map(i64::from)
}

fn minute(v: &[u8]) -> Option<i64> {
    digits::<2>(v).filter(|m| *m <= 59).map(i64::from)
}

/// A contract timestamp as UTC microseconds since 1970 (section 1).
///
/// `YYYY-MM-DD`, or that + `T`/space + `HH:MM`, `HH:MM:SS` or `HH:MM:SS.f` (1-6 digits), then
/// optionally `Z` or `+HH:MM`/`-HH:MM`. No offset is UTC. The instant must fall in 0001-9999.
pub fn parse_timestamp(v: &[u8]) -> Option<i64> {
    let day = i64::from(parse_date(v.get(..10)?)?);
    let mut micros = day * MICROS_PER_DAY;
    let rest = &v[10..];
    if rest.is_empty() {
        return Some(micros);
    }
    if rest.len() < 6 || !(rest[0] == b'T' || rest[0] == b' ') || rest[3] != b':' {
        return None;
    }
    let mut clock = hour(&rest[1..3])? * 3_600 + minute(&rest[4..6])? * 60;
    let mut i = 6;
    let mut fraction = 0i64;
    if rest.get(i) == Some(&b':') {
        clock += minute(rest.get(i + 1..i + 3)?)?;
        i += 3;
        if rest.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < rest.len() && rest[i].is_ascii_digit() && i - start < 6 {
                fraction = fraction * 10 + i64::from(rest[i] - b'0');
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return None;
            }
            fraction *= 10i64.pow(6 - n as u32);
        }
    }
    micros += clock * 1_000_000 + fraction;
    let zone = &rest[i..];
    match zone {
        [] | [b'Z'] => {}
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let offset = (hour(&[*h1, *h2])? * 60 + minute(&[*m1, *m2])?) * 60_000_000;
            micros -= if *sign == b'+' { offset } else { -offset };
        }
        _ => return None,
    }
    (MIN_INSTANT..END_INSTANT)
        .contains(&micros)
        .then_some(micros)
}

/// Money: 1-16 digits, optionally a point and one or two digits, as integer cents.
pub fn parse_money(v: &[u8]) -> Option<i64> {
    let (whole, frac) = match memchr::memchr(b'.', v) {
        Some(p) => (&v[..p], Some(&v[p + 1..])),
        None => (v, None),
    };
    if whole.is_empty() || whole.len() > 16 || !whole.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut cents = whole.iter().fold(0i64, |n, b| n * 10 + i64::from(b - b'0')) * 100;
    if let Some(frac) = frac {
        match frac {
            [a] if a.is_ascii_digit() => cents += i64::from(a - b'0') * 10,
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
                cents += i64::from(a - b'0') * 10 + i64::from(b - b'0');
            }
            _ => return None,
        }
    }
    Some(cents)
}

/// Largest quantity (PostgreSQL `integer`).
pub const QUANTITY_MAX: i64 = 2_147_483_647;

/// Quantity: digits only, 1..=2147483647.
pub fn parse_quantity(v: &[u8]) -> Option<i32> {
    if v.is_empty() {
        return None;
    }
    let mut n = 0i64;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = (n * 10 + i64::from(b - b'0')).min(QUANTITY_MAX + 1); // saturate: never overflows
    }
    i32::try_from(n).ok().filter(|q| *q >= 1)
}

/// The four statuses, lower case.
pub const STATUSES: [&str; 4] = ["completed", "cancelled", "refunded", "pending"];

/// A status, case-insensitively, as its lower-case name.
pub fn parse_status(v: &[u8]) -> Option<&'static str> {
    STATUSES
        .into_iter()
        .find(|s| s.as_bytes().eq_ignore_ascii_case(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims() {
        assert_eq!(trim(b" \t a b \r\n"), b"a b");
        assert_eq!(trim(b"  "), b"");
        assert_eq!(trim(b"\x0bx"), b"\x0bx");
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date(b"1970-01-01"), Some(0));
        assert_eq!(parse_date(b"2024-02-29"), Some(19_782));
        assert_eq!(parse_date(b"2023-02-29"), None);
        assert_eq!(parse_date(b"0000-01-01"), None);
        assert_eq!(parse_date(b"0001-01-01"), Some(-719_162));
        assert_eq!(parse_date(b"9999-12-31"), Some(2_932_896));
        for bad in [
            "2024-1-01",
            "2024/01/01",
            "2024-13-01",
            "2024-00-10",
            "2024-01-32",
            "２０２４-01-01",
        ] {
            assert_eq!(parse_date(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        let day = 19_723i64 * MICROS_PER_DAY; // 2024-01-01
        let h = 3_600_000_000i64;
        let cases: &[(&str, Option<i64>)] = &[
            ("2024-01-01", Some(day)),
            ("2024-01-01T10:30", Some(day + 10 * h + 30 * 60_000_000)),
            (
                "2024-01-01 10:30:15",
                Some(day + 10 * h + 30 * 60_000_000 + 15_000_000),
            ),
            ("2024-01-01T00:00:00.5", Some(day + 500_000)),
            ("2024-01-01T00:00:00.000001Z", Some(day + 1)),
            ("2024-01-01T01:00+01:00", Some(day)),
            (
                "2024-01-01T00:00-23:59",
                Some(day + 23 * h + 59 * 60_000_000),
            ),
            ("0001-01-01T00:00+00:01", None),
            ("9999-12-31T23:59:59.999999", Some(END_INSTANT - 1)),
            ("9999-12-31T23:59-00:01", None),
            ("2024-01-01Z", None),
            ("2024-01-01T24:00", None),
            ("2024-01-01T10:60", None),
            ("2024-01-01T10:30:60", None),
            ("2024-01-01T10:30:00.", None),
            ("2024-01-01T10:30:00.1234567", None),
            ("2024-01-01T10", None),
            ("2024-01-01T10:30+0100", None),
            ("2024-01-01T10:30+24:00", None),
            ("2024-01-01t10:30", None),
            ("2024-01-01  10:30", None),
            ("2024-01-01T10:30:00Z ", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp(text.as_bytes()), *want, "{text}");
        }
    }

    #[test]
    fn money() {
        let cases: &[(&str, Option<i64>)] = &[
            ("12", Some(1200)),
            ("12.5", Some(1250)),
            ("12.50", Some(1250)),
            ("0", Some(0)),
            ("9999999999999999.99", Some(999_999_999_999_999_999)),
            ("12.", None),
            (".5", None),
            ("+1", None),
            ("-0", None),
            ("1e3", None),
            ("1,000", None),
            ("1.234", None),
            ("12345678901234567", None),
            ("1.2.3", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_money(text.as_bytes()), *want, "{text}");
        }
    }

    #[test]
    fn quantities_and_statuses() {
        assert_eq!(parse_quantity(b"007"), Some(7));
        assert_eq!(parse_quantity(b"2147483647"), Some(i32::MAX));
        assert_eq!(parse_quantity(b"2147483648"), None);
        assert_eq!(parse_quantity(b"99999999999999999999999"), None);
        assert_eq!(parse_quantity(b"0"), None);
        assert_eq!(parse_quantity(b"1.0"), None);
        assert_eq!(parse_status(b"CoMpLeTeD"), Some("completed"));
        assert_eq!(parse_status(b"complete"), None);
    }
}
