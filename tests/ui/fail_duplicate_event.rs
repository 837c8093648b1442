#[nmsg::events(rename_all = "kebab-case")]
trait Service {
    fn pick_hand(&self);
    #[nmsg(event = "pick-hand")]
    fn pick_hand_again(&self);
    #[nmsg(event = "*")]
    fn everything(&self);
    #[nmsg(event = "")]
    fn nothing(&self);
}

fn main() {}
