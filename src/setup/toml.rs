//! Shared toml_edit helpers: parse with a line number, walk to (or create) nested tables.

use toml_edit::{DocumentMut, Item, Table};

use super::MergeError;

pub fn parse(text: &str) -> Result<DocumentMut, MergeError> {
    text.parse::<DocumentMut>().map_err(|e| {
        let (line, column) = super::line_col(text, e.span().map_or(0, |s| s.start));
        MergeError::Parse {
            format: "TOML",
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

pub fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "missing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) if v.is_inline_table() => "an inline table",
        Item::Value(v) if v.is_array() => "an array",
        Item::Value(v) if v.is_str() => "a string",
        Item::Value(_) => "a value",
    }
}

/// The table at `path` under `table`, created (without a header of its own unless it gets
/// keys) where missing. `shown` is the dotted prefix used in error messages.
pub fn table_at<'a>(
    mut table: &'a mut Table,
    shown: &str,
    path: &[&str],
) -> Result<&'a mut Table, MergeError> {
    let mut key_path = shown.to_string();
    for key in path {
        if !key_path.is_empty() {
            key_path.push('.');
        }
        key_path.push_str(key);
        let item = table.entry(key).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let found = describe(item);
        table = item.as_table_mut().ok_or(MergeError::Shape {
            key: key_path.clone(),
            found,
            expected: "a table",
        })?;
    }
    Ok(table)
}

/// The strings of an array value, or None when the item is not an array of strings.
pub fn strings(item: Option<&Item>) -> Option<Vec<String>> {
    item?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}
