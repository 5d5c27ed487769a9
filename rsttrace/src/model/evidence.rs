//! The facts a verdict rests on, by name: `Cause::evidence`, which every
//! output writes. One is built for every event, so it allocates little:
//! names and most texts are static strings, numbers plain values, and the
//! facts one list. Only text made at run time, lists, and evidence read
//! back from a file own their memory. Kept sorted by name, the order the
//! JSON export has always had.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

/// Facts by name, sorted, each name once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence(Vec<(Cow<'static, str>, Fact)>);

/// One fact's value: the JSON types evidence uses, without JSON's
/// allocations for the common ones.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    Text(Cow<'static, str>),
    /// Non-negative integers.
    Uint(u64),
    /// Negative integers.
    Int(i64),
    Bool(bool),
    Facts(Evidence),
    /// Anything else (lists, fractions, null): as JSON.
    Json(Value),
}

/// What indexing a missing name gives, as `serde_json::Value` does.
static NULL: Fact = Fact::Json(Value::Null);

impl Evidence {
    pub fn new() -> Evidence {
        Evidence(Vec::new())
    }

    /// Sets `name`, replacing its earlier value.
    pub fn insert(&mut self, name: Cow<'static, str>, value: impl Into<Fact>) {
        let value = value.into();
        match self.position(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    /// `insert` for builders: `Evidence::new().with("a", 1).with("b", "x")`.
    pub fn with(mut self, name: &'static str, value: impl Into<Fact>) -> Evidence {
        self.insert(Cow::Borrowed(name), value);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Fact> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The facts in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Fact)> {
        self.0.iter().map(|(name, value)| (&**name, value))
    }

    /// The same facts as a JSON object.
    pub fn to_json(&self) -> Map<String, Value> {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_json()))
            .collect()
    }

    /// Evidence read back from a file: names and texts owned.
    pub fn from_json(map: Map<String, Value>) -> Evidence {
        // A JSON object's names are unique and serde_json keeps them sorted.
        let mut facts: Vec<_> = map
            .into_iter()
            .map(|(name, value)| (Cow::<'static, str>::Owned(name), Fact::from(value)))
            .collect();
        facts.sort_by(|a, b| a.0.cmp(&b.0));
        Evidence(facts)
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name))
    }
}

impl std::ops::Index<&str> for Evidence {
    type Output = Fact;

    /// Panics when `name` is missing, as indexing a map does.
    fn index(&self, name: &str) -> &Fact {
        self.get(name)
            .unwrap_or_else(|| panic!("no evidence named {name:?}"))
    }
}

impl Fact {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Fact::Text(s) => Some(s),
            Fact::Json(v) => v.as_str(),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Fact::Uint(n) => Some(*n),
            Fact::Json(v) => v.as_u64(),
            _ => None,
        }
    }

    /// Any integer, JSON's included.
    fn integer(&self) -> Option<i128> {
        match self {
            Fact::Uint(n) => Some((*n).into()),
            Fact::Int(n) => Some((*n).into()),
            Fact::Json(v) => v
                .as_u64()
                .map(i128::from)
                .or_else(|| v.as_i64().map(i128::from)),
            _ => None,
        }
    }

    pub fn is_string(&self) -> bool {
        self.as_str().is_some()
    }

    /// A nested fact by name; None when there is none, or when this fact
    /// holds no nested facts (as `Value::get`).
    pub fn get(&self, name: &str) -> Option<&Fact> {
        match self {
            Fact::Facts(facts) => facts.get(name),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Fact::Text(s) => Value::String(s.to_string()),
            Fact::Uint(n) => Value::from(*n),
            Fact::Int(n) => Value::from(*n),
            Fact::Bool(b) => Value::Bool(*b),
            Fact::Facts(facts) => Value::Object(facts.to_json()),
            Fact::Json(v) => v.clone(),
        }
    }
}

impl std::ops::Index<&str> for Fact {
    type Output = Fact;

    /// A missing or non-object fact gives null, as `Value` does.
    fn index(&self, name: &str) -> &Fact {
        self.get(name).unwrap_or(&NULL)
    }
}

/// JSON text: `{"name":value,...}`.
impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Value::Object(self.to_json()))
    }
}

/// JSON text, as `Value`'s `Display`.
impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Uint(n) => write!(f, "{n}"),
            Fact::Int(n) => write!(f, "{n}"),
            Fact::Bool(b) => write!(f, "{b}"),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

impl From<&'static str> for Fact {
    fn from(s: &'static str) -> Fact {
        Fact::Text(Cow::Borrowed(s))
    }
}

impl From<String> for Fact {
    fn from(s: String) -> Fact {
        Fact::Text(Cow::Owned(s))
    }
}

impl From<Cow<'static, str>> for Fact {
    fn from(s: Cow<'static, str>) -> Fact {
        Fact::Text(s)
    }
}

impl From<bool> for Fact {
    fn from(b: bool) -> Fact {
        Fact::Bool(b)
    }
}

impl From<Evidence> for Fact {
    fn from(facts: Evidence) -> Fact {
        Fact::Facts(facts)
    }
}

macro_rules! from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for Fact {
            fn from(n: $t) -> Fact {
                Fact::Uint(n as u64)
            }
        }
    )*};
}
from_unsigned!(u8, u16, u32, u64, usize);

impl From<i64> for Fact {
    /// Non-negative numbers are `Uint`, so that equal numbers are equal facts.
    fn from(n: i64) -> Fact {
        match u64::try_from(n) {
            Ok(n) => Fact::Uint(n),
            Err(_) => Fact::Int(n),
        }
    }
}

impl From<i32> for Fact {
    fn from(n: i32) -> Fact {
        Fact::from(i64::from(n))
    }
}

impl From<Value> for Fact {
    /// The JSON types `Fact` has a variant for get it, so that a fact read
    /// back from a file equals the fact written.
    fn from(v: Value) -> Fact {
        match v {
            Value::String(s) => Fact::Text(Cow::Owned(s)),
            Value::Bool(b) => Fact::Bool(b),
            Value::Number(n) if n.is_u64() || n.is_i64() => match n.as_u64() {
                Some(u) => Fact::Uint(u),
                None => n.as_i64().map_or(Fact::Json(Value::Number(n)), Fact::Int),
            },
            Value::Object(map) => Fact::Facts(Evidence::from_json(map)),
            other => Fact::Json(other),
        }
    }
}

/// Comparisons with plain values and JSON, for rules and tests.
impl PartialEq<&str> for Fact {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<bool> for Fact {
    fn eq(&self, other: &bool) -> bool {
        matches!(self, Fact::Bool(b) if b == other)
    }
}

impl PartialEq<Value> for Fact {
    fn eq(&self, other: &Value) -> bool {
        self.to_json() == *other
    }
}

macro_rules! eq_integer {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Fact {
            fn eq(&self, other: &$t) -> bool {
                self.integer() == Some(*other as i128)
            }
        }
    )*};
}
eq_integer!(u8, u16, u32, u64, usize, i32, i64);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn facts_stay_sorted_by_name_and_a_name_is_set_once() {
        let mut e = Evidence::new().with("unsent", 3u32).with("errno", "EPIPE");
        e.insert("errno".into(), "ECONNRESET");
        e.insert(Cow::Owned("b".to_string()), true);
        let names: Vec<_> = e.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "errno", "unsent"]);
        assert_eq!(e["errno"], "ECONNRESET");
        assert_eq!(e["unsent"], 3);
        assert!(e.get("missing").is_none());
    }

    #[test]
    fn json_round_trips_to_equal_facts() {
        let v = json!({"z": -4, "a": {"n": 7, "s": "x"}, "l": [1, 2], "f": 0.5, "b": false, "nul": null});
        let Value::Object(map) = v.clone() else {
            unreachable!()
        };
        let e = Evidence::from_json(map.clone());
        assert_eq!(e.to_json(), map);
        assert_eq!(e["a"]["n"], 7);
        assert_eq!(e["a"]["s"], "x");
        assert_eq!(e["a"]["missing"], Value::Null);
        assert_eq!(e["z"], Fact::Int(-4));
        assert_eq!(e["l"], json!([1, 2]));
        // Built from plain values, it equals the same evidence read back.
        let built = Evidence::new()
            .with("n", 7u16)
            .with("s", "x")
            .with("neg", -1i64);
        let Value::Object(json) = Value::Object(built.to_json()) else {
            unreachable!()
        };
        assert_eq!(Evidence::from_json(json), built);
    }

    #[test]
    fn display_is_json_text() {
        assert_eq!(Fact::from("a\"b").to_string(), r#""a\"b""#);
        assert_eq!(Fact::from(5u8).to_string(), "5");
        assert_eq!(Fact::from(json!([1])).to_string(), "[1]");
        assert_eq!(
            Fact::from(Evidence::new().with("k", 1u8)).to_string(),
            r#"{"k":1}"#
        );
        assert_eq!(
            Evidence::new().with("b", "x").with("a", 1u8).to_string(),
            r#"{"a":1,"b":"x"}"#
        );
    }
}
