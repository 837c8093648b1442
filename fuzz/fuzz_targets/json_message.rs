#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nmsg_fuzz::json_message(data));
