//! The container lifecycle below the verbs: the state guard each verb runs first, building a
//! container, running one in the foreground, deleting one, and the containers a killed nvbind
//! left half-made.

pub mod console;
pub mod create;
pub mod delete;
pub mod foreground;
pub mod guard;
pub mod halfmade;
pub mod report;
