#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tabswarm_fuzz::peer_decoders::data_plan(data));
