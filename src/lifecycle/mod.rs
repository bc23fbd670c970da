//! The container lifecycle below the verbs: building a container, and the containers a killed
//! nvbind left half-made.

pub mod create;
pub mod halfmade;
