#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| certbridge_fuzz::adcs_page(data));
