#[nmsg::events]
trait Service<T> {
    type Item;
    const LIMIT: usize;
    fn get(&self, item: Self::Item) -> T;
    unsafe fn danger(&self);
}

fn main() {}
