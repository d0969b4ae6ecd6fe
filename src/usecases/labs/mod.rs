//! Virtual labs (api.md §4.1, rules.md §4.1 and §4.3).

pub mod create;
mod error;
pub mod view;

pub use create::{NewLabRequest, create};
pub use error::LabError;
pub use view::{LabExpand, LabView, LabWithPeople, get, list, load_view, soft_delete, update};
