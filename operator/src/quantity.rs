//! Kubernetes resource quantities ("10Gi", "500M", "1.5Ti") as numbers, to
//! compare storage sizes and count CPUs.

/// The value of a quantity, or None when it is not one.
pub fn bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// A CPU quantity ("500m", "2", "1.5") in millicores, rounded up.
pub fn millicores(q: &str) -> Option<u64> {
    let cores = bytes(q)?;
    (cores.is_finite() && cores >= 0.0).then(|| (cores * 1000.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_in_millicores() {
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("-1"), None);
    }

    #[test]
    fn binary_decimal_and_exponent_suffixes() {
        assert_eq!(bytes("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(bytes("1.5Ti"), Some(1.5 * 1024f64.powi(4)));
        assert_eq!(bytes("500M"), Some(5e8));
        assert_eq!(bytes("1e3"), Some(1000.0));
        assert_eq!(bytes("100"), Some(100.0));
        assert!(bytes("10GB").is_none());
        assert!(bytes("lots").is_none());
        assert!(bytes("11Gi") > bytes("10Gi"));
    }
}
