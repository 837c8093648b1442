// A type without a TypeScript description compiles in the trait, and is
// reported where declarations are asked for.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Point {
    x: i32,
}

#[nmsg::events]
pub trait Board {
    fn place(&self, at: Point);
}

fn main() {
    let _ = nmsg::typescript::declarations::<BoardClient>();
}
