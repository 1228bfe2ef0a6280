//! `sqlx::migrate!` embeds the migration folders at compile time; cargo
//! must rebuild this crate when a migration is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
