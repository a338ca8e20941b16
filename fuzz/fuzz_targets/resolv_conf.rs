#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| faultline_fuzz::resolv_conf(data));
