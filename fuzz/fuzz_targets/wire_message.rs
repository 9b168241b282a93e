#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tabswarm_fuzz::consensus_decoders::wire_message(data));
