//! Fuzz target: any bytes through the whole config front door. `parse`
//! and `validate` must return (a config, an error, a report), never panic,
//! and a config that parses must survive a write and re-parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = machine_config::parse(data) {
        let report = doc.validate();
        let bare = machine_config::validate(&doc.config);
        assert_eq!(report.errors.len(), bare.errors.len());
        let yaml = machine_config::to_yaml(&doc.config).expect("a parsed config can be written");
        let again = machine_config::parse(yaml.as_bytes()).expect("a written config parses");
        assert_eq!(again.config, doc.config);
    }
    let _ = machine_config::load(data);
});
