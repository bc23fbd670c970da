//! JSON decoding of whole documents held in memory (spec files, bundle configs).
//!
//! serde_json's slice reader checks the UTF-8 of every string it meets, one call per string
//! (938 calls for the 8-GPU spec, about 90k instructions); checking the whole text once,
//! then reading it as `str`, does the same work in one vectorised pass. Text that is not
//! UTF-8 goes through the slice reader, so its error names the line and column as before.

use serde::de::DeserializeOwned;

/// Decodes `data`; the result and any error are those of `serde_json::from_slice`.
pub fn from_bytes<T: DeserializeOwned>(data: &[u8]) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(data) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn both(data: &[u8]) -> (Result<Value, String>, Result<Value, String>) {
        (
            from_bytes::<Value>(data).map_err(|e| e.to_string()),
            serde_json::from_slice::<Value>(data).map_err(|e| e.to_string()),
        )
    }

    #[test]
    fn decodes_and_fails_exactly_as_the_slice_reader() {
        let cases: &[&[u8]] = &[
            br#"{"a": ["x", "\u00e9", "\ud83d\ude00"], "b": 1}"#,
            "{\"caf\u{e9}\": \"\u{2603}\"}".as_bytes(),
            b"{\"a\": \"\xff\"}",
            b"{\"a\": 1,\n \"b\": \"\xc3\"}",
            b"{\"a\": \n\n ]",
            br#"{"a": "\ud800"}"#,
            b"",
            b"\xef\xbb\xbf{}",
            br#"{"a": 1} trailing"#,
        ];
        for data in cases {
            let (ours, theirs) = both(data);
            assert_eq!(ours, theirs, "input {:?}", String::from_utf8_lossy(data));
        }
        assert!(both(b"{\"a\": \"\xff\"}")
            .0
            .unwrap_err()
            .contains("line 1 column"));
    }
}
