#[cfg(madsim)]
#[test]
fn placeholder() {}
