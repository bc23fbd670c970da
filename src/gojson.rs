//! The OCI documents runc reads (config.json, `exec --process`, `update --resources`) decoded
//! with the key matching of Go's encoding/json, which runc decodes them with: an object key
//! names the struct field spelled exactly so, or else the field whose name equals it ignoring
//! case. Specs written for runc rely on it without knowing: runc's own cgroups.bats writes
//! hugetlb limits as `{"pagesize": "2MB", ...}`, which serde's exact matching drops as an
//! unknown key (the page size then reads as empty). Keys of maps (annotations, sysctl,
//! `unified`) are data and stay exact, as in Go.
//!
//! The matching is done where a struct is deserialized, from the field names serde derives,
//! so it holds for every struct of the spec and for none of its maps. Only ASCII letters fold
//! (Go folds Unicode; every field name of the spec is ASCII). When a document has a key
//! spelled exactly and another in another case for one field, the exact one is taken (Go
//! takes the later one; serde_json's map does not keep the order).

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use serde::Deserializer;
use serde_json::{Map, Value};

/// Deserializes `value` as Go's encoding/json would match its keys.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    T::deserialize(GoKeys(value))
}

struct GoKeys(Value);

/// The object with each key that names no field exactly renamed to the field it names
/// ignoring case, if one does.
fn fold_keys(map: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    if map.keys().all(|k| fields.contains(&k.as_str())) {
        return map;
    }
    let mut folded = Map::new();
    let mut renamed = Vec::new();
    for (key, value) in map {
        if fields.contains(&key.as_str()) {
            folded.insert(key, value);
        } else if let Some(field) = fields.iter().find(|f| f.eq_ignore_ascii_case(&key)) {
            renamed.push((field.to_string(), value));
        } else {
            folded.insert(key, value);
        }
    }
    for (field, value) in renamed {
        folded.entry(field).or_insert(value);
    }
    folded
}

impl<'de> Deserializer<'de> for GoKeys {
    type Error = serde_json::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries::new(map)),
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(GoKeys(other)),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Entries::new(fold_keys(map, fields))),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    // Enum values are strings (namespace types, seccomp actions...): matched exactly, as Go.
    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Entries {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl Entries {
    fn new(map: Map<String, Value>) -> Self {
        Entries {
            iter: map.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value asked for before its key"))?;
        seed.deserialize(GoKeys(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(GoKeys(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxResources, Process, Spec};
    use serde_json::json;

    #[test]
    fn keys_in_another_case_name_their_fields_as_in_go() {
        let r: LinuxResources = from_value(json!({
            "hugepageLimits": [{"pagesize": "2MB", "limit": 4194304}],
            "MEMORY": {"Limit": 1048576},
            "unified": {"Memory.High": "1"}
        }))
        .unwrap();
        let h = &r.hugepage_limits().as_ref().unwrap()[0];
        assert_eq!((h.page_size().as_str(), h.limit()), ("2MB", 4194304));
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(1048576));
        // a map's keys are data: kept as written
        let unified = r.unified().as_ref().unwrap();
        assert_eq!(unified.get("Memory.High").map(String::as_str), Some("1"));
    }

    #[test]
    fn the_exact_spelling_wins_and_enum_values_stay_exact() {
        let r: LinuxResources = from_value(json!({
            "hugepageLimits": [{"pagesize": "1GB", "pageSize": "2MB", "limit": 1}]
        }))
        .unwrap();
        assert_eq!(r.hugepage_limits().as_ref().unwrap()[0].page_size(), "2MB");
        let bad = from_value::<Spec>(json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "PID"}]}
        }));
        assert!(
            bad.is_err(),
            "an enum value in another case is not a variant"
        );
    }

    /// What serde_json gives for a document in the exact spelling, this gives too.
    #[test]
    fn a_document_in_the_exact_spelling_reads_as_serde_json_reads_it() {
        let spec = serde_json::to_value(Spec::default()).unwrap();
        assert_eq!(
            from_value::<Spec>(spec.clone()).unwrap(),
            serde_json::from_value::<Spec>(spec).unwrap()
        );
        let p = json!({"terminal": true, "user": {"uid": 1, "gid": 2}, "args": ["sh"],
            "cwd": "/", "env": ["A=1"], "capabilities": {"bounding": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 5, "soft": 4}]});
        assert_eq!(
            from_value::<Process>(p.clone()).unwrap(),
            serde_json::from_value::<Process>(p).unwrap()
        );
    }

    #[test]
    fn wrong_types_still_fail() {
        let e = from_value::<LinuxResources>(json!({"memory": {"limit": "lots"}})).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
