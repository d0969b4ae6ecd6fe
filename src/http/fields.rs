//! Reading request bodies and query strings into typed values with the validation messages of
//! api.md §2.2 (`Field required`, `Must be a UUID`, …) and the value encodings of §0.2.
//!
//! Each request body and query string is one type that implements [`FromFields`]: it reads
//! every field through a [`Fields`] reader, which records the first problem of each key, and
//! the same type derives `ToSchema`/`IntoParams` with the limits it checks, so the parser and
//! the OpenAPI document cannot drift apart. [`parse`] turns the problems into one 422. (serde's
//! own errors cannot produce these messages, nor the integer/UUID/datetime leniency the
//! contract asks for.)

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
pub use super::error::FieldErrors;
use crate::domain::{datetime, email::EmailAddress};

/// Parses a request body that must be a JSON object (api.md §2.2, key `body`).
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_field("body", "Field required"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_field(
            "body",
            "Request body must be a JSON object",
        )),
        Err(_) => Err(ApiError::invalid_field(
            "body",
            "Request body is not valid JSON",
        )),
    }
}

/// Parses a request body that may be left out: a missing or blank body and `null` read as `{}`;
/// anything else must be a JSON object.
pub fn optional_json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Null) => Ok(Map::new()),
        _ => json_object(bytes),
    }
}

/// A PATCH value: absent, explicitly `null`, or given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch<T> {
    Absent,
    Null,
    Value(T),
}

/// A request shape read from a JSON object (a body, or a query string).
///
/// `from_fields` reads every field (so that every key's first problem is recorded) and builds
/// the value with `?` on the required ones: it returns `None` only after the reader recorded a
/// problem, which [`parse`] reports as the 422.
pub trait FromFields: Sized {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self>;
}

/// Parses `object` as `T`: the value, or one 422 with every problem in the order found.
pub fn parse<T: FromFields>(
    object: &Map<String, Value>,
    raw_query: Option<&str>,
) -> Result<T, ApiError> {
    let mut f = Fields::new(object);
    f.raw_query = raw_query;
    let value = T::from_fields(&mut f);
    match value {
        Some(value) if f.errors.is_empty() => Ok(value),
        // `None` always comes with a recorded problem (see `FromFields`).
        _ => Err(ApiError::validation(f.errors)),
    }
}

/// A parser of one JSON value; the error is the message for the field.
pub type Parser<'p, T> = &'p dyn Fn(&Value) -> Result<T, String>;

/// Reads fields of one JSON object (a body, or a query string turned into string values).
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    /// The query string as sent, for repeatable keys ([`Fields::list`]).
    raw_query: Option<&'a str>,
    errors: FieldErrors,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>) -> Self {
        Self {
            object,
            raw_query: None,
            errors: FieldErrors::new(),
        }
    }

    /// Every value of a repeatable query key (comma-separated values split), each one of
    /// `allowed`; any other value → `Must be one of: …` for the key.
    pub fn list(&mut self, key: &str, allowed: &'static [&'static str]) -> Vec<String> {
        let values = query_all(self.raw_query, key);
        if values.iter().any(|v| !allowed.contains(&v.as_str())) {
            self.errors
                .add(key, format!("Must be one of: {}", allowed.join(", ")));
            return Vec::new();
        }
        values
    }

    /// A required field: absent → `Field required`, `null` → `Must not be null`.
    pub fn required<T>(&mut self, key: &str, parse: Parser<'_, T>) -> Option<T> {
        match self.object.get(key) {
            None => {
                self.errors.add(key, "Field required");
                None
            }
            Some(Value::Null) => {
                self.errors.add(key, "Must not be null");
                None
            }
            Some(value) => self.parse(key, value, parse),
        }
    }

    /// An optional field; `null` counts as absent.
    pub fn optional<T>(&mut self, key: &str, parse: Parser<'_, T>) -> Option<T> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => self.parse(key, value, parse),
        }
    }

    /// A PATCH field, keeping an explicit `null` apart from absence.
    pub fn patch<T>(&mut self, key: &str, parse: Parser<'_, T>) -> Patch<T> {
        match self.object.get(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(value) => match self.parse(key, value, parse) {
                Some(v) => Patch::Value(v),
                None => Patch::Absent,
            },
        }
    }

    /// A nullable PATCH field: absent → `None` (unchanged), `null` → `Some(None)` (cleared).
    pub fn nullable<T>(&mut self, key: &str, parse: Parser<'_, T>) -> Option<Option<T>> {
        match self.patch(key, parse) {
            Patch::Absent => None,
            Patch::Null => Some(None),
            Patch::Value(v) => Some(Some(v)),
        }
    }

    /// A PATCH field whose explicit `null` is rejected with `Must not be null`.
    pub fn patch_not_null<T>(&mut self, key: &str, parse: Parser<'_, T>) -> Option<T> {
        match self.patch(key, parse) {
            Patch::Null => {
                self.errors.add(key, "Must not be null");
                None
            }
            Patch::Value(v) => Some(v),
            Patch::Absent => None,
        }
    }

    /// Records an error found by the handler itself (e.g. a cross-field rule).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors.add(key, message);
    }

    /// `Ok` when every field was valid, else one 422 with every problem.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }

    fn parse<T>(&mut self, key: &str, value: &Value, parse: Parser<'_, T>) -> Option<T> {
        match parse(value) {
            Ok(v) => Some(v),
            Err(message) => {
                self.errors.add(key, message);
                None
            }
        }
    }
}

/// A query string as a JSON object of string values (the last value of a repeated key wins,
/// except through [`query_all`]).
pub fn query_object(raw: Option<&str>) -> Map<String, Value> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// Every value of a repeatable query key, with comma-separated values split.
pub fn query_all(raw: Option<&str>, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---- parsers ---------------------------------------------------------------------------------

fn as_str(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| "Must be a string".to_owned())
}

/// A free-text string. PostgreSQL cannot store a NUL character, so a text with one is a 422
/// here rather than a database error later. (Documented as the `pattern`
/// `^[^\u0000]*$`, or `^[^\u0000]*[^\s\u0000][^\u0000]*$` when it must not be blank.)
fn as_text(value: &Value) -> Result<&str, String> {
    let s = as_str(value)?;
    if s.contains('\0') {
        return Err("Must not contain a NUL character".to_owned());
    }
    Ok(s)
}

/// A string, trimmed, with `min..=max` characters after trimming.
pub fn text(min: usize, max: usize) -> impl Fn(&Value) -> Result<String, String> {
    move |value| {
        let s = as_text(value)?.trim();
        let len = s.chars().count();
        if len < min {
            return Err(if min == 1 {
                "Must not be empty".to_owned()
            } else {
                format!("Must be at least {min} characters")
            });
        }
        if len > max {
            return Err(format!("Must be at most {max} characters"));
        }
        Ok(s.to_owned())
    }
}

/// Any string, kept as sent.
pub fn any_string(value: &Value) -> Result<String, String> {
    as_text(value).map(str::to_owned)
}

/// A UUID of any version, hyphenated, case-insensitive.
pub fn uuid(value: &Value) -> Result<Uuid, String> {
    let s = as_str(value).map_err(|_| "Must be a UUID".to_owned())?;
    parse_uuid(s).ok_or_else(|| "Must be a UUID".to_owned())
}

/// The hyphenated 36-character form only (no braces, no simple form, no URN).
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// An integer: a JSON integer, a float with a zero fraction, or a string of a decimal integer.
/// Booleans are rejected.
pub fn integer(value: &Value) -> Result<i64, String> {
    const MSG: &str = "Must be an integer";
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Ok(f as i64)
                } else {
                    Err(MSG.to_owned())
                }
            } else {
                Err(MSG.to_owned())
            }
        }
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(MSG.to_owned());
            }
            t.parse::<i64>().map_err(|_| MSG.to_owned())
        }
        _ => Err(MSG.to_owned()),
    }
}

/// An integer in `min..=max`.
pub fn integer_between(min: i64, max: i64) -> impl Fn(&Value) -> Result<i64, String> {
    move |value| {
        let i = integer(value)?;
        if i < min || i > max {
            return Err(format!("Must be between {min} and {max}"));
        }
        Ok(i)
    }
}

/// An integer ≥ `min`.
pub fn integer_at_least(min: i64) -> impl Fn(&Value) -> Result<i64, String> {
    move |value| {
        let i = integer(value)?;
        if i < min {
            return Err(format!("Must be at least {min}"));
        }
        Ok(i)
    }
}

/// A JSON boolean.
pub fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| "Must be a boolean".to_owned())
}

/// A boolean in a query string: `true`, `false`, `1`, `0`, case-insensitive.
pub fn query_boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("Must be a boolean".to_owned()),
        },
        _ => Err("Must be a boolean".to_owned()),
    }
}

/// A list of 1..`max` distinct UUIDs under `key`: `Must be a list`, `Must contain at least 1
/// item`, `Must contain at most {max} items`, `{key}[i]: Must be a UUID`, and `Duplicate
/// {singular} in request: {id}` (compared as UUIDs, reported lower-case).
pub fn uuid_list(
    key: &'static str,
    singular: &'static str,
    max: usize,
) -> impl Fn(&Value) -> Result<Vec<Uuid>, String> {
    move |value| {
        let items = value
            .as_array()
            .ok_or_else(|| "Must be a list".to_owned())?;
        if items.is_empty() {
            return Err("Must contain at least 1 item".to_owned());
        }
        if items.len() > max {
            return Err(format!("Must contain at most {max} items"));
        }
        let mut ids = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let id = item
                .as_str()
                .and_then(parse_uuid)
                .ok_or_else(|| format!("{key}[{i}]: Must be a UUID"))?;
            ids.push(id);
        }
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        if let Some(duplicate) = ids.iter().find(|id| !seen.insert(**id)) {
            return Err(format!("Duplicate {singular} in request: {duplicate}"));
        }
        Ok(ids)
    }
}

/// The schema of [`uuid_list`].
pub fn uuid_list_schema(max: usize) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
        .min_items(Some(1))
        .max_items(Some(max))
        .unique_items(true)
        .build()
}

/// The schema of a string that must be one of `values` (for `schema_with`).
pub fn string_enum(values: &[&str]) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// The schema of a list of strings each one of `values` (a repeatable query key).
pub fn string_enum_list(values: &[&str]) -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(string_enum(values))
        .build()
}

/// One of a fixed list of strings.
pub fn one_of(allowed: &'static [&'static str]) -> impl Fn(&Value) -> Result<String, String> {
    move |value| {
        let s = as_str(value)?;
        if allowed.contains(&s) {
            Ok(s.to_owned())
        } else {
            Err(format!("Must be one of: {}", allowed.join(", ")))
        }
    }
}

/// An e-mail address (api.md §0.2), trimmed.
pub fn email(value: &Value) -> Result<EmailAddress, String> {
    let s = as_str(value)?;
    EmailAddress::parse(s).map_err(|_| "Must be a valid e-mail address".to_owned())
}

/// A datetime in any accepted input form (api.md §0.2).
pub fn datetime_value(value: &Value) -> Result<DateTime<Utc>, String> {
    datetime::parse_input(value).ok_or_else(|| "Must be a valid date-time".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn body_level_problems_use_the_body_key() {
        for (raw, message) in [
            ("", "Field required"),
            ("  ", "Field required"),
            ("{", "Request body is not valid JSON"),
            ("[1]", "Request body must be a JSON object"),
        ] {
            let err = json_object(raw.as_bytes()).unwrap_err();
            assert_eq!(err.details["body"], message, "{raw:?}");
        }
    }

    #[test]
    fn required_optional_and_null_are_told_apart() {
        let o = obj(json!({"a": null, "b": "x"}));
        let mut f = Fields::new(&o);
        assert_eq!(f.required("a", &any_string), None);
        assert_eq!(f.required("missing", &any_string), None);
        assert_eq!(f.optional("a", &any_string), None);
        assert_eq!(f.patch("a", &any_string), Patch::Null);
        assert_eq!(f.patch("zz", &any_string), Patch::Absent);
        assert_eq!(f.required("b", &any_string), Some("x".to_owned()));
        let err = f.finish().unwrap_err();
        assert_eq!(err.details["a"], "Must not be null");
        assert_eq!(err.details["missing"], "Field required");
    }

    #[test]
    fn integers_accept_the_lenient_forms_and_reject_booleans() {
        assert_eq!(integer(&json!(5)), Ok(5));
        assert_eq!(integer(&json!(5.0)), Ok(5));
        assert_eq!(integer(&json!("5")), Ok(5));
        assert!(integer(&json!(5.5)).is_err());
        assert!(integer(&json!(true)).is_err());
        assert!(integer(&json!("5x")).is_err());
        assert_eq!(
            integer_between(1, 100)(&json!(101)),
            Err("Must be between 1 and 100".to_owned())
        );
    }

    #[test]
    fn uuids_of_any_version_in_any_case_are_accepted() {
        assert!(uuid(&json!("00000000-0000-0000-0000-000000000000")).is_ok());
        assert!(uuid(&json!("A1B2C3D4-E5F6-1A7B-8C9D-0E1F2A3B4C5D")).is_ok());
        assert!(uuid(&json!("a1b2c3d4e5f61a7b8c9d0e1f2a3b4c5d")).is_err());
        assert!(uuid(&json!(12)).is_err());
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        let t = text(1, 5);
        assert_eq!(t(&json!("  ab ")), Ok("ab".to_owned()));
        assert_eq!(t(&json!("   ")), Err("Must not be empty".to_owned()));
        assert_eq!(
            t(&json!("abcdef")),
            Err("Must be at most 5 characters".to_owned())
        );
        assert_eq!(t(&json!(3)), Err("Must be a string".to_owned()));
    }

    #[test]
    fn query_strings_are_read_as_strings() {
        let o = query_object(Some("page=2&admin_access_only=TRUE&q=a%25b"));
        let mut f = Fields::new(&o);
        assert_eq!(f.optional("page", &integer_at_least(1)), Some(2));
        assert_eq!(f.optional("admin_access_only", &query_boolean), Some(true));
        assert_eq!(f.optional("q", &any_string), Some("a%b".to_owned()));
        assert_eq!(
            query_all(Some("expand=admins,owner&expand=x"), "expand"),
            vec!["admins", "owner", "x"]
        );
    }

    #[derive(Debug, PartialEq)]
    struct Shape {
        name: String,
        count: Option<i64>,
        cleared: Option<Option<String>>,
    }

    impl FromFields for Shape {
        fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
            let name = f.required("name", &text(1, 5));
            let count = f.optional("count", &integer_between(1, 9));
            let cleared = f.nullable("cleared", &any_string);
            Some(Self {
                name: name?,
                count,
                cleared,
            })
        }
    }

    #[test]
    fn a_shape_parses_or_reports_every_problem_in_order() {
        let ok = parse::<Shape>(&obj(json!({"name": " ab ", "cleared": null})), None);
        assert_eq!(
            ok,
            Ok(Shape {
                name: "ab".to_owned(),
                count: None,
                cleared: Some(None),
            })
        );
        // An optional field's problem fails the parse even though the value could be built.
        let err = parse::<Shape>(&obj(json!({"name": "ab", "count": 10})), None).unwrap_err();
        assert_eq!(err.details["count"], "Must be between 1 and 9");
        let err = parse::<Shape>(&obj(json!({"count": "x", "cleared": 3})), None).unwrap_err();
        let keys: Vec<&String> = err.details.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "count", "cleared"]);
    }

    #[test]
    fn texts_with_a_nul_character_are_rejected() {
        assert_eq!(
            text(1, 5)(&json!("a\0b")),
            Err("Must not contain a NUL character".to_owned())
        );
        assert_eq!(
            any_string(&json!("\0")),
            Err("Must not contain a NUL character".to_owned())
        );
    }

    #[test]
    fn repeatable_query_keys_are_checked_against_their_values() {
        let raw = "expand=admins,owner&expand=x";
        let o = query_object(Some(raw));
        let mut f = Fields::new(&o);
        f.raw_query = Some(raw);
        assert!(f.list("expand", &["admins", "owner"]).is_empty());
        let err = f.finish().unwrap_err();
        assert_eq!(err.details["expand"], "Must be one of: admins, owner");
    }
}
