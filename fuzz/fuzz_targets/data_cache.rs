#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tabswarm_fuzz::browser_decoders::data_cache(data));
