//! Courses (api.md §4.5, rules.md §2.1, §4.6, §4.14): create, update and activate a course,
//! and the read-only queries.

mod activate;
mod create;
mod error;
mod queries;
mod update;

pub mod delete;
pub mod void;

pub use activate::activate;
pub use create::{CourseRequest, create};
pub use error::CourseError;
pub use queries::{get, search};
pub use update::update;
