//! Request-body helpers. JSON Schema counts `2.0` as an integer, so the
//! integer fields of request bodies accept a number with no fractional part
//! written either way; anything else is a clear validation error.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// An integer of type `T`, however the client wrote it.
struct Integral<T>(T);

impl<'de, T: TryFrom<i64>> Deserialize<'de> for Integral<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<i64>> V<T> {
            fn fit<E: de::Error>(n: i64) -> Result<Integral<T>, E> {
                T::try_from(n)
                    .map(Integral)
                    .map_err(|_| E::custom(format!("{n} is out of range")))
            }
        }
        impl<T: TryFrom<i64>> Visitor<'_> for V<T> {
            type Value = Integral<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Self::fit(n)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                i64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is out of range")))
                    .and_then(Self::fit)
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Self::Value, E> {
                // Exactly representable integers only: |x| < 2^63.
                if x.fract() == 0.0 && x.abs() < 9.223_372_036_854_776e18 {
                    Self::fit(x as i64)
                } else {
                    Err(E::custom(format!("{x} is not an integer in range")))
                }
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `#[serde(deserialize_with = "crate::json::int")]`
pub fn int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    Integral::deserialize(d).map(|i| i.0)
}

/// For `Option<T>` fields (with `#[serde(default)]`): null and absent are `None`.
pub fn opt_int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Integral<T>>::deserialize(d).map(|o| o.map(|i| i.0))
}

/// For `Option<Option<T>>` patch fields (with `#[serde(default)]`): absent
/// leaves the value, null clears it, a number sets it.
pub fn patch_int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<Integral<T>>::deserialize(d).map(|o| Some(o.map(|i| i.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "int")]
        n: i32,
        #[serde(default, deserialize_with = "opt_int")]
        o: Option<i64>,
        #[serde(default, deserialize_with = "patch_int")]
        p: Option<Option<i32>>,
    }

    fn parse(s: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn integers_written_as_whole_numbers_are_accepted_and_others_refused() {
        let b = parse(r#"{"n": 2.0, "o": 7}"#).unwrap();
        assert_eq!(
            b,
            Body {
                n: 2,
                o: Some(7),
                p: None
            }
        );
        assert_eq!(parse(r#"{"n": 1, "p": null}"#).unwrap().p, Some(None));
        assert_eq!(parse(r#"{"n": 1, "p": 3e0}"#).unwrap().p, Some(Some(3)));
        assert!(parse(r#"{"n": 2.5}"#).is_err());
        assert!(parse(r#"{"n": 3000000000}"#).is_err());
        assert!(parse(r#"{"n": 1e300}"#).is_err());
        assert!(parse(r#"{"n": "1"}"#).is_err());
        assert!(parse(r#"{"n": 1, "o": 18446744073709551615}"#).is_err());
    }
}
