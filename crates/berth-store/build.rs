//! `sqlx::migrate!` embeds the migration files at compile time but cannot
//! see a file added to their directories; this makes cargo rebuild then.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
