//! SQL, one module per table group. Functions take an executor (pool, connection or open
//! transaction) so the use case decides the transaction boundary.

pub mod access;
pub mod access_revocations;
pub mod claim_tokens;
pub mod courses;
pub mod db;
pub mod drop_preview;
pub mod drops;
pub mod email_outbox;
pub mod enrolments;
pub mod events;
pub mod expiry;
pub mod expiry_runs;
pub mod idempotent_requests;
pub mod institutions;
pub mod invites;
pub mod labs;
pub mod notices;
pub mod projects;
pub mod sagas;
pub mod seats;
pub mod top_ups;

/// A `LIKE`/`ILIKE` pattern matching `needle` literally as a substring (`%`, `_` and `\`
/// escaped; use with `ESCAPE '\'`).
pub fn like_pattern(needle: &str) -> String {
    let mut escaped = String::with_capacity(needle.len() + 2);
    escaped.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

/// The sort key of the lab and project listings (api.md §4.1.2, §4.2.2); ties go by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    CreatedAt,
    UpdatedAt,
    Name,
    Owner,
}

impl ListOrder {
    /// `order_by` as the API names it; `updated_at` when absent.
    pub fn from_param(value: Option<&str>) -> Self {
        match value {
            Some("created_at") => ListOrder::CreatedAt,
            Some("name") => ListOrder::Name,
            Some("owner") => ListOrder::Owner,
            _ => ListOrder::UpdatedAt,
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            ListOrder::CreatedAt => "created_at",
            ListOrder::UpdatedAt => "updated_at",
            // Byte order, so the listing does not depend on the database's collation.
            ListOrder::Name => "name COLLATE \"C\"",
            ListOrder::Owner => "owner_id",
        }
    }
}

/// The name of the constraint or index a unique violation hit, if that is what `err` is.
pub fn unique_violation(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
    }
}
