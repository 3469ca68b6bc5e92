#[test]
fn scratch() {
    let s = haconiwa::spec::load_file(std::path::Path::new("examples/sleeper.haco")).unwrap();
    println!("{}", serde_json::to_string_pretty(&s).unwrap());
    for src in [
        "haconiwa.define(|c| { c.nme = 1; });",
        "haconiwa.define(|c| {\n  c.name = \"x\";\n  c.namespace.unshare([\"uts2\"]);\n});",
        "haconiwa.define(|c| {\n  c.cgroup[\"memory.maxx\"] = 1;\n});",
        "haconiwa.define(|c| {\n  c.name = \"x\"\n  c.foo();\n});",
        "haconiwa.define(|c| {\n  c.name = \"x\";\n});",
        "haconiwa.define(|c| { loop {} });",
        "let x = ;",
    ] {
        println!("{}", haconiwa::spec::load_str(src, "t.haco", None).unwrap_err());
    }
}
