use nmsg::Callback;

#[nmsg::events]
trait Service {
    #[nmsg(event = "pick-hand")]
    fn pick_hand(&self, hands: Callback<(Callback<(Callback<(String,)>,)>,)>);
}

struct Impl;

impl Service for Impl {
    fn pick_hand(&self, hands: Callback<(Callback<(Callback<(String,)>,)>,)>) {
        // One level short: the hand must be a callback that gets a callback.
        let hand = Callback::new(|(colour,): (String,)| drop(colour));
        let _ = hands.call((hand,));
    }
}

fn main() {}
