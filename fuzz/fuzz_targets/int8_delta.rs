#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tabswarm_fuzz::core_decoders::int8_delta(data));
