#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| certbridge_fuzz::kube_sim_body(data));
