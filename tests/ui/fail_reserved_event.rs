#[nmsg::events]
trait Service {
    #[nmsg(event = "$nmsg.contract:Service")]
    fn contract(&self, cb: nmsg::Callback<(String,)>);
    #[nmsg(event = "$nmsg.anything")]
    fn anything(&self);
}

#[nmsg::events(rename_all = "camelCase")]
trait Other {
    fn check_contract(&self) -> bool;
}

fn main() {}
