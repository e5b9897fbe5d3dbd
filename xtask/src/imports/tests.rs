use super::*;

/// Source files of a crate, from (path below `src/`, text).
fn files(list: &[(&str, &str)]) -> Vec<SourceFile> {
    list.iter()
        .map(|(path, text)| SourceFile {
            shown: format!("src/{path}"),
            relative: PathBuf::from(path),
            text: (*text).to_owned(),
        })
        .collect()
}

/// The graph's edges as `from -> to` lines.
fn edges(list: &[(&str, &str)]) -> Vec<String> {
    let built = graph(&files(list)).unwrap();
    built
        .edges
        .iter()
        .flat_map(|(from, out)| {
            out.keys().map(move |to| format!("{} -> {}", module_name(from), module_name(to)))
        })
        .collect()
}

#[test]
fn files_are_modules() {
    let of = |p: &str, lib| module_of(Path::new(p), lib).map(|m| module_name(&m));
    assert_eq!(of("lib.rs", true).as_deref(), Some("crate"));
    assert_eq!(of("ring.rs", true).as_deref(), Some("ring"));
    assert_eq!(of("fdpass/mod.rs", true).as_deref(), Some("fdpass"));
    assert_eq!(of("fdpass/context.rs", true).as_deref(), Some("fdpass::context"));
    assert_eq!(of("main.rs", true), None);
    assert_eq!(of("main.rs", false).as_deref(), Some("crate"));
    assert_eq!(of("bin/tool.rs", true), None);
    assert_eq!(of("notes.txt", true), None);
}

#[test]
fn a_cycle_is_found_with_one_edge_for_each_member() {
    let cycles = crate_cycles(
        "demo",
        &files(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", "use crate::b::Beta;\npub struct Alpha;\n"),
            ("b.rs", "pub struct Beta;\n\npub fn make() -> crate::c::Gamma {\n    todo!()\n}\n"),
            ("c.rs", "pub struct Gamma(crate::a::Alpha);\n"),
        ]),
    )
    .unwrap();
    assert_eq!(cycles.len(), 1);
    let example = |place: &str, path: &str| Example { place: place.into(), path: path.into() };
    assert_eq!(
        cycles[0].members,
        [
            ("a".into(), "b".into(), example("src/a.rs:1", "crate::b::Beta")),
            ("b".into(), "c".into(), example("src/b.rs:3", "crate::c::Gamma")),
            ("c".into(), "a".into(), example("src/c.rs:1", "crate::a::Alpha")),
        ]
    );
    let report = Report { crates: vec!["demo".into()], cycles, violations: Vec::new() };
    assert!(!report.is_clean());
    let text = report.render();
    assert!(text.starts_with("cycle 1 in demo (3 modules): a, b, c\n"), "{text}");
    assert!(text.contains("    a -> b  at src/a.rs:1 (crate::b::Beta)\n"), "{text}");
    assert!(text.ends_with("lint-imports: 1 crates, 1 import cycle, 0 layering violations\n"));
}

#[test]
fn a_chain_is_no_cycle_and_separate_cycles_are_separate() {
    let built = graph(&files(&[
        ("lib.rs", ""),
        ("a.rs", "use crate::b::X;"),
        ("b.rs", "use crate::a::Y;"),
        ("c.rs", "use crate::a::Y;\nuse crate::d::Z;"),
        ("d.rs", "use crate::e::W;"),
        ("e.rs", "use crate::d::V;"),
        ("f.rs", "use crate::c::U;"),
    ]))
    .unwrap();
    let names: Vec<Vec<String>> =
        cycles(&built).iter().map(|c| c.iter().map(|m| module_name(m)).collect()).collect();
    assert_eq!(names, [vec!["a", "b"], vec!["d", "e"]]);
}

#[test]
fn re_exports_at_the_root_resolve_to_their_module_and_the_root_is_no_node() {
    let list = [
        (
            "lib.rs",
            "mod a;\nmod error;\npub use a::helper;\npub use error::Error;\npub fn init() {}\n",
        ),
        (
            "a.rs",
            "use crate::Error;\npub fn helper() -> Result<(), Error> {\n    crate::init();\n    Ok(())\n}\n",
        ),
        (
            "error.rs",
            "pub struct Error;\nimpl Error {\n    pub fn new() -> Self {\n        crate::helper().err().unwrap()\n    }\n}\n",
        ),
    ];
    // `crate::Error` is error.rs's; `crate::init` is the root's own and counts for nothing.
    // `crate::helper` is a.rs's, so the two form a real cycle; the root is in none.
    assert_eq!(edges(&list), ["a -> error", "error -> a"]);
    let built = graph(&files(&list)).unwrap();
    assert!(!built.nodes.contains(&Vec::new()));
    let only_root = [
        ("lib.rs", "mod a;\nmod b;\npub use a::A;\npub struct Config;\n"),
        ("a.rs", "pub struct A(crate::Config);\n"),
        ("b.rs", "pub fn f(_: crate::Config, _: crate::A) {}\n"),
    ];
    assert_eq!(edges(&only_root), ["b -> a"]);
    assert!(cycles(&graph(&files(&only_root)).unwrap()).is_empty());
}

#[test]
fn re_exports_are_followed_through_globs_and_several_hops() {
    let list = [
        ("lib.rs", "mod inner;\nmod user;\npub use inner::*;\n"),
        ("inner/mod.rs", "mod deep;\npub use deep::Thing as Renamed;\n"),
        ("inner/deep.rs", "pub struct Thing;\n"),
        ("user.rs", "use crate::Renamed;\n"),
    ];
    assert_eq!(edges(&list), ["inner -> inner::deep", "user -> inner::deep"]);
}

#[test]
fn imports_in_test_code_count_for_nothing() {
    let list = [
        ("lib.rs", "mod a;\nmod b;\n#[cfg(test)]\nmod testing;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        (
            "b.rs",
            "pub struct B;\n\
             #[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n\
             #[cfg(test)]\nfn helper() -> crate::a::A { crate::a::A }\n\
             #[cfg(all(test, unix))]\nuse crate::a::A as Unix;\n\
             impl B {\n    #[cfg(test)]\n    fn probe() { let _ = crate::a::A; }\n}\n",
        ),
        ("testing.rs", "use crate::a::A;\nuse crate::b::B;\n"),
    ];
    assert_eq!(edges(&list), ["a -> b"]);
    // A condition that is not test-only counts.
    let any = [
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "pub struct A;\n"),
        ("b.rs", "#[cfg(any(test, feature = \"x\"))]\nuse crate::a::A;\n"),
    ];
    assert_eq!(edges(&any), ["b -> a"]);
}

#[test]
fn super_in_a_submodule_is_an_edge_to_the_parent_file() {
    let list = [
        ("lib.rs", "mod fdpass;\nmod wire;\n"),
        ("wire.rs", "pub struct Frame;\n"),
        (
            "fdpass/mod.rs",
            "mod context;\nmod objects;\npub use context::PassFd;\npub(crate) fn helper() {}\n",
        ),
        (
            "fdpass/context.rs",
            "use super::helper;\nuse super::PassFd as Again;\npub struct PassFd;\n",
        ),
        (
            "fdpass/objects.rs",
            "use super::super::wire::Frame;\nuse super::context;\npub(super) fn f() { context::PassFd; }\n",
        ),
    ];
    // `super::PassFd` is context.rs's own item, re-exported by its parent: no edge.
    assert_eq!(
        edges(&list),
        [
            "fdpass -> fdpass::context",
            "fdpass::context -> fdpass",
            "fdpass::objects -> fdpass::context",
            "fdpass::objects -> wire"
        ]
    );
    let found = crate_cycles("demo", &files(&list)).unwrap();
    assert_eq!(found.len(), 1);
    let members: Vec<&str> = found[0].members.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(members, ["fdpass", "fdpass::context"]);
    assert_eq!(found[0].members[1].2.place, "src/fdpass/context.rs:1");
}

#[test]
fn nested_groups_self_globs_and_renames_are_all_read() {
    let list = [
        ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\n"),
        (
            "a.rs",
            "use crate::{b, c::{self as see, C}};\nuse crate::d::*;\nuse self::super::e::E as Eh;\n",
        ),
        ("b.rs", ""),
        ("c.rs", "pub struct C;"),
        ("d.rs", ""),
        ("e.rs", "pub struct E;"),
    ];
    assert_eq!(edges(&list), ["a -> b", "a -> c", "a -> d", "a -> e"]);
}

#[test]
fn paths_in_code_and_macros_count_and_visibility_comments_and_strings_do_not() {
    let list = [
        ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\nmod f;\n"),
        (
            "a.rs",
            "pub(super) fn f() {\n\
             \x20   // crate::e::nothing() in a comment\n\
             \x20   let s = \"crate::e::nothing()\";\n\
             \x20   println!(\"{}\", crate::b::name());\n\
             \x20   let x: Vec<crate::c::C> = Vec::new();\n\
             \x20   match x.first() { Some(crate::d::D) => {}, _ => {} }\n\
             \x20   format!(\"{:?}\", vec![[crate::f::F]]);\n\
             }\n\
             pub(in crate::e) struct Hidden;\n\
             /// See [`crate::e::Doc`].\n\
             pub struct Documented;\n",
        ),
        ("b.rs", "pub fn name() {}"),
        ("c.rs", "pub struct C;"),
        ("d.rs", "pub struct D;"),
        ("e.rs", "pub struct Doc;"),
        ("f.rs", "pub struct F;"),
    ];
    assert_eq!(edges(&list), ["a -> b", "a -> c", "a -> d", "a -> f"]);
}

#[test]
fn child_module_names_resolve_relative_to_their_file() {
    let list = [
        ("lib.rs", "mod outer;\nmod other;\n"),
        ("other.rs", "pub struct O;"),
        (
            "outer/mod.rs",
            "mod child;\nuse child::Thing;\n\
             fn f(child: u32) -> u32 { child + 1 }\n\
             mod inline {\n    fn g() { let _ = child::Thing; }\n}\n",
        ),
        ("outer/child.rs", "pub struct Thing;\nfn h() { let _ = other::O; }\n"),
    ];
    // `child::Thing` is outer's child, but not inside the inline module (no child of its own);
    // `other::O` in outer/child.rs is no child of outer::child (it would not compile).
    assert_eq!(edges(&list), ["outer -> outer::child"]);
}

#[test]
fn dependencies_are_read_in_every_shape() {
    let manifest = r#"
[package]
name = "mp-pool"

[dependencies]
mp-process.workspace = true
mp-shm = { workspace = true }
renamed = { package = "mp-sync", path = "../mp-sync" }
serde = { version = "1", features = [
    "derive",
] }

[dependencies.mp-queue]
path = "../mp-queue"

[target.'cfg(unix)'.dependencies]
mp-manager = { path = "../mp-manager" } # a comment

[build-dependencies]
mp-testkit.workspace = true

[dev-dependencies]
mp-pool = { path = ".", features = ["failpoints"] }

[workspace.dependencies]
mp = { path = "." }
"#;
    let found: Vec<(String, layers::Kind)> =
        layers::dependencies(manifest).into_iter().map(|d| (d.package, d.kind)).collect();
    use layers::Kind::{Build, Dev, Normal};
    let want = [
        ("mp-process", Normal),
        ("mp-shm", Normal),
        ("mp-sync", Normal),
        ("serde", Normal),
        ("mp-queue", Normal),
        ("mp-manager", Normal),
        ("mp-testkit", Build),
        ("mp-pool", Dev),
    ];
    let want: Vec<(String, layers::Kind)> =
        want.iter().map(|(p, k)| ((*p).to_owned(), *k)).collect();
    assert_eq!(found, want);
}

#[test]
fn layering_allows_lower_crates_only_and_the_test_kit_as_a_dev_dependency() {
    let members: Vec<String> = layers::ORDER
        .iter()
        .chain(&[layers::TEST_KIT, "mp-extra"])
        .map(|s| (*s).to_owned())
        .collect();
    let check = |krate: &str, manifest: &str| -> Vec<String> {
        layers::check(krate, "Cargo.toml", manifest, &members)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let fine = "[dependencies]\nmp-process.workspace = true\nserde = \"1\"\n\
                [dev-dependencies]\nmp-testkit.workspace = true\nmp-pool.workspace = true\n";
    assert!(check("mp-shm", fine).is_empty());
    assert!(check(layers::TEST_KIT, "[dependencies]\nmp-pool.workspace = true\n").is_empty());
    assert_eq!(
        check("mp-shm", "[dependencies]\nmp-sync.workspace = true\nmp-shm = { path = \".\" }\n"),
        [
            "mp-shm depends on mp-sync (Cargo.toml:2, [dependencies]): mp-sync is not below \
             mp-shm in the order mp-process < mp-shm < mp-sync < mp-queue < mp-pool < \
             mp-manager < mp-mpi < mp",
            "mp-shm depends on mp-shm (Cargo.toml:3, [dependencies]): mp-shm is not below \
             mp-shm in the order mp-process < mp-shm < mp-sync < mp-queue < mp-pool < \
             mp-manager < mp-mpi < mp",
        ]
    );
    assert_eq!(
        check("mp-pool", "[build-dependencies]\nmp-testkit.workspace = true\n"),
        ["mp-pool depends on mp-testkit (Cargo.toml:2, [build-dependencies]): mp-testkit is \
          for [dev-dependencies] only"]
    );
    assert_eq!(check("mp-extra", "[dependencies]\nmp-process.workspace = true\n").len(), 1);
    assert_eq!(check("mp-pool", "[dependencies]\nmp-extra.workspace = true\n").len(), 1);
}

#[test]
fn the_workspace_keeps_its_layering() {
    let report = check(&crate::root()).unwrap();
    for krate in layers::ORDER.iter().chain(&[layers::TEST_KIT]) {
        assert!(report.crates.iter().any(|c| c == krate), "{krate} was not looked at");
    }
    assert_eq!(report.violations, []);
}
