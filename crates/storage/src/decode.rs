//! Reading stored values that must parse. A value that does not is corrupt data: an error
//! naming the table, the column and the row's key — never replaced by a default (an empty
//! map of lines, `{}` for properties that held the eventId, a zero).

use std::fmt::Display;

use serde::de::DeserializeOwned;

/// The error for a stored value of `table.column` in the row keyed `key` that cannot be
/// read as what it must be.
pub fn corrupt(
    table: &str,
    column: &str,
    key: impl Display,
    problem: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: format!("{table}.{column} of row {key}"),
        source: problem.into(),
    }
}

/// `text`, stored in `table.column` of the row keyed `key`, parsed as JSON.
pub fn json<T: DeserializeOwned>(
    text: &str,
    table: &str,
    column: &str,
    key: impl Display,
) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| corrupt(table, column, key, e))
}

/// `text`, stored in `table.column` of the row keyed `key`, parsed as a `T` (a domain value
/// such as an orderNo or an amount).
pub fn parse<T>(text: &str, table: &str, column: &str, key: impl Display) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(|e| corrupt(table, column, key, e))
}

/// A value that must be present in `table.column` of the row keyed `key`.
pub fn required<T>(
    value: Option<T>,
    table: &str,
    column: &str,
    key: impl Display,
) -> Result<T, sqlx::Error> {
    value.ok_or_else(|| corrupt(table, column, key, "missing (NULL)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_json_names_the_table_column_and_key() {
        let e = json::<std::collections::BTreeMap<String, String>>("{", "outbox", "properties", 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outbox.properties of row 7"), "{e}");
        let e = required::<i64>(None, "orders", "order_no", "id 3").unwrap_err().to_string();
        assert!(e.contains("orders.order_no of row id 3") && e.contains("missing"), "{e}");
    }
}
