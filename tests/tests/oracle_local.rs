//! The differential suite: each case deploys the same bundles with this
//! agent's `local` and with the official `codedeploy-local` (Ruby 1.8.1),
//! in separate roots, and compares the installed tree, the hooks and their
//! environment, the exit status and the records (testbed::differential).
//! Deliberate differences are listed once, below, with their reasons; any
//! other difference fails.

use testbed::differential::{differential, recorder, Side};

/// The deliberate differences (README, "Differences from the official
/// agent"), each once, with the aspects it shows in.
mod known {
    use testbed::differential::{Aspect::*, Known};
    pub const DIR_SYMLINK: Known = Known {
        aspects: &[Tree, Records],
        why: "a symlink to a directory is installed as a link (what the bundle holds); Ruby copies the directory it points to",
    };
    pub const OVERWRITE_DIR: Known = Known {
        aspects: &[Exit, Tree, Records],
        why: "OVERWRITE onto a directory fails, naming it; Ruby copies the file into that directory and succeeds",
    };
    pub const APPSPEC_YAML: Known = Known {
        aspects: &[Exit, Tree, Hooks, Records],
        why: "a revision with only appspec.yaml deploys, as the official CLI's help promises; Ruby installs from it but its hooks look for appspec.yml and fail (2.x refuses it at DownloadBundle)",
    };
    pub const BOM: Known = Known {
        aspects: &[Exit, Tree, Hooks, Records],
        why: "a UTF-8 byte order mark is ignored; Ruby reads it into the first key and fails with an empty os",
    };
    pub const ALIASES: Known = Known {
        aspects: &[Exit, Tree, Hooks, Records],
        why: "YAML aliases are expanded (bounded); the oracle runs on Ruby 3.1, whose Psych 4 refuses aliases in YAML.load, while the agent's Ruby 2.x hosts accept them",
    };
}

fn files_appspec(s: &Side, extra: &str) -> String {
    format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n{extra}",
        s.dest().display()
    )
}

/// A site tree and the recording hook on every hook event.
fn site_with_hooks(s: &mut Side, events: &[&str]) -> testbed::bundle::Bundle {
    let b = s.bundle();
    b.file("site/index.html", "<h1>v1</h1>\n")
        .file("site/css/app.css", "body{}\n")
        .file("hooks/rec.sh", &recorder(&s.out()))
        .mode("hooks/rec.sh", 0o755);
    let mut hooks = String::from("hooks:\n");
    for e in events {
        hooks.push_str(&format!("  {e}:\n    - location: hooks/rec.sh\n"));
    }
    b.appspec(&files_appspec(s, &hooks));
    b
}

const ALL_HOOKS: [&str; 5] = [
    "ApplicationStop",
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

macro_rules! cases {
    ($($name:ident $(, $known:expr)* => $body:expr;)*) => {
        $(
            #[test]
            fn $name() {
                differential(&[$($known),*], $body);
            }
        )*
    };
}

cases! {
    one_file_from_a_directory => |s: &mut Side| {
        let b = s.bundle();
        b.file("a.txt", "a\n");
        b.appspec(&format!("version: 0.0\nos: linux\nfiles:\n  - source: a.txt\n    destination: {}\n", s.dest().display()));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    a_tree_from_a_tgz => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    a_tree_from_a_tar => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "tar", &["-g", "g1"]);
    };
    a_tree_from_a_zip => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "zip", &["-g", "g1"]);
    };
    a_tgz_wrapped_in_one_directory => |s: &mut Side| {
        let b = site_with_hooks(s, &["AfterInstall"]);
        s.deploy(&b, "tgz-wrapped", &["-g", "g1"]);
    };
    several_mappings_and_nested_destinations => |s: &mut Side| {
        let b = s.bundle();
        b.file("site/index.html", "i\n").file("conf/app.conf", "c\n").file("bin/run", "r\n");
        let d = s.dest().display().to_string();
        b.appspec(&format!("version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: {d}/www\n  - source: conf/app.conf\n    destination: {d}/etc/app/deep\n  - source: bin\n    destination: {d}/opt/bin\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    every_hook_in_order_from_a_directory => |s: &mut Side| {
        let b = site_with_hooks(s, &ALL_HOOKS);
        s.deploy(&b, "directory", &["-g", "g1", "-d", "web-group", "-a", "shop"]);
    };
    every_hook_in_order_from_a_zip => |s: &mut Side| {
        let b = site_with_hooks(s, &ALL_HOOKS);
        s.deploy(&b, "zip", &["-g", "g1", "-a", "shop"]);
    };
    a_redeploy_runs_application_stop_from_the_previous_revision => |s: &mut Side| {
        let b = site_with_hooks(s, &ALL_HOOKS);
        s.deploy(&b, "tgz", &["-g", "g1", "-a", "shop"]);
        let b2 = site_with_hooks(s, &ALL_HOOKS);
        b2.file("site/index.html", "<h1>v2</h1>\n");
        s.deploy(&b2, "tgz", &["-g", "g1", "-a", "shop"]);
    };
    a_redeploy_removes_what_the_previous_one_installed => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.file("site/old.html", "old\n").file("site/sub/older.css", "x\n");
        s.deploy(&b, "directory", &["-g", "g1"]);
        let b2 = s.bundle();
        b2.file("site/index.html", "v2\n");
        b2.appspec(&files_appspec(s, ""));
        s.deploy(&b2, "directory", &["-g", "g1"]);
    };
    a_second_group_onto_the_same_files_is_refused => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "directory", &["-g", "g1"]);
        s.deploy(&b, "directory", &["-g", "g2"]);
    };
    an_existing_file_is_refused_by_default => |s: &mut Side| {
        std::fs::create_dir_all(s.dest()).unwrap();
        std::fs::write(s.dest().join("index.html"), "theirs\n").unwrap();
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    overwrite_replaces_an_existing_file => |s: &mut Side| {
        std::fs::create_dir_all(s.dest()).unwrap();
        std::fs::write(s.dest().join("index.html"), "theirs\n").unwrap();
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "directory", &["-g", "g1", "-b", "OVERWRITE"]);
    };
    retain_keeps_an_existing_file => |s: &mut Side| {
        std::fs::create_dir_all(s.dest()).unwrap();
        std::fs::write(s.dest().join("index.html"), "theirs\n").unwrap();
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "directory", &["-g", "g1", "-b", "RETAIN"]);
    };
    the_appspecs_file_exists_behavior_wins => |s: &mut Side| {
        std::fs::create_dir_all(s.dest()).unwrap();
        std::fs::write(s.dest().join("index.html"), "theirs\n").unwrap();
        let b = s.bundle();
        b.file("site/index.html", "ours\n");
        b.appspec(&files_appspec(s, "file_exists_behavior: RETAIN\n"));
        s.deploy(&b, "directory", &["-g", "g1", "-b", "OVERWRITE"]);
    };
    overwrite_in_lower_case => |s: &mut Side| {
        std::fs::create_dir_all(s.dest()).unwrap();
        std::fs::write(s.dest().join("index.html"), "theirs\n").unwrap();
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "directory", &["-g", "g1", "-b", "overwrite"]);
    };
    overwrite_onto_a_directory, known::OVERWRITE_DIR => |s: &mut Side| {
        std::fs::create_dir_all(s.dest().join("index.html/inner")).unwrap();
        let b = site_with_hooks(s, &[]);
        s.deploy(&b, "directory", &["-g", "g1", "-b", "OVERWRITE"]);
    };
    a_failing_hook_fails_the_deployment => |s: &mut Side| {
        let b = site_with_hooks(s, &["BeforeInstall"]);
        b.file("hooks/fail.sh", "#!/bin/sh\necho failing\nexit 3\n").mode("hooks/fail.sh", 0o755);
        b.appspec(&files_appspec(s, "hooks:\n  AfterInstall:\n    - location: hooks/fail.sh\n  ApplicationStart:\n    - location: hooks/rec.sh\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    a_failure_before_install_installs_nothing => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.file("hooks/fail.sh", "#!/bin/sh\nexit 1\n").mode("hooks/fail.sh", 0o755);
        b.appspec(&files_appspec(s, "hooks:\n  BeforeInstall:\n    - location: hooks/fail.sh\n"));
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    a_hook_past_its_timeout_fails => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.file("hooks/slow.sh", "#!/bin/sh\nsleep 30\n").mode("hooks/slow.sh", 0o755);
        b.appspec(&files_appspec(s, "hooks:\n  ApplicationStart:\n    - location: hooks/slow.sh\n      timeout: 1\n  ValidateService:\n    - location: hooks/rec.sh\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    a_missing_script_fails => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&files_appspec(s, "hooks:\n  AfterInstall:\n    - location: hooks/nope.sh\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    a_script_that_is_not_executable_is_made_executable => |s: &mut Side| {
        let b = site_with_hooks(s, &["AfterInstall"]);
        b.mode("hooks/rec.sh", 0o644);
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    a_script_without_a_shebang_runs_through_sh => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        let out = s.out();
        b.file("hooks/plain.sh", &format!("echo \"plain $LIFECYCLE_EVENT\" >> {}/hooks.log\n", out.display())).mode("hooks/plain.sh", 0o755);
        b.appspec(&files_appspec(s, "hooks:\n  AfterInstall:\n    - location: hooks/plain.sh\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    runas_switches_the_user => |s: &mut Side| {
        testbed::require_test_user();
        std::fs::set_permissions(s.out(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let b = site_with_hooks(s, &[]);
        b.appspec(&files_appspec(s, "hooks:\n  AfterInstall:\n    - location: hooks/rec.sh\n      runas: cdtest\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    two_scripts_in_one_event_run_in_order => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        let out = s.out();
        b.file("hooks/second.sh", &format!("#!/bin/sh\necho second >> {}/hooks.log\n", out.display())).mode("hooks/second.sh", 0o755);
        b.appspec(&files_appspec(s, "hooks:\n  ApplicationStart:\n    - location: hooks/rec.sh\n    - location: hooks/second.sh\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    permissions_mode_owner_and_group => |s: &mut Side| {
        testbed::require_test_user();
        let b = site_with_hooks(s, &[]);
        b.appspec(&files_appspec(s, &format!("permissions:\n  - object: {}\n    pattern: \"*.html\"\n    owner: cdtest\n    group: cdtest\n    mode: \"640\"\n    type:\n      - file\n", s.dest().display())));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    permissions_on_directories_only => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&files_appspec(s, &format!("permissions:\n  - object: {}\n    mode: \"750\"\n    type:\n      - directory\n", s.dest().display())));
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    permissions_with_except => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&files_appspec(s, &format!("permissions:\n  - object: {}\n    pattern: \"**\"\n    except: [index.html]\n    mode: \"600\"\n    type:\n      - file\n", s.dest().display())));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    chosen_events_only => |s: &mut Side| {
        let b = site_with_hooks(s, &ALL_HOOKS);
        s.deploy(&b, "directory", &["-g", "g1", "-e", "DownloadBundle,Install,ApplicationStart"]);
    };
    application_stop_alone_after_a_deployment => |s: &mut Side| {
        let b = site_with_hooks(s, &ALL_HOOKS);
        s.deploy(&b, "tgz", &["-g", "g1"]);
        s.deploy(&b, "tgz", &["-g", "g1", "-e", "ApplicationStop"]);
    };
    a_custom_event_named_with_dash_e => |s: &mut Side| {
        let b = site_with_hooks(s, &["ApplicationStart", "WarmCaches"]);
        s.deploy(&b, "directory", &["-g", "g1", "-e", "DownloadBundle,Install,ApplicationStart,WarmCaches"]);
    };
    an_appspec_without_files_or_hooks => |s: &mut Side| {
        let b = s.bundle();
        b.appspec("version: 0.0\nos: linux\n");
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    an_appspec_named_appspec_yaml, known::APPSPEC_YAML => |s: &mut Side| {
        let b = site_with_hooks(s, &["AfterInstall"]);
        std::fs::rename(b.dir.join("appspec.yml"), b.dir.join("appspec.yaml")).unwrap();
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    an_appspec_named_with_dash_a => |s: &mut Side| {
        let b = site_with_hooks(s, &["AfterInstall"]);
        std::fs::rename(b.dir.join("appspec.yml"), b.dir.join("deploy.yml")).unwrap();
        s.deploy(&b, "directory", &["-g", "g1", "-A", "deploy.yml"]);
    };
    a_missing_named_appspec_fails => |s: &mut Side| {
        let b = site_with_hooks(s, &["AfterInstall"]);
        s.deploy(&b, "directory", &["-g", "g1", "-A", "deploy.yml"]);
    };
    file_names_with_spaces_and_unicode => |s: &mut Side| {
        let b = s.bundle();
        b.file("site/a file.txt", "1\n").file("site/caf\u{e9}/men\u{fc}.txt", "2\n");
        b.appspec(&files_appspec(s, ""));
        s.deploy(&b, "zip", &["-g", "g1"]);
    };
    modes_of_a_directory_bundle => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.file("site/secret.txt", "s\n").mode("site/secret.txt", 0o600);
        b.file("site/bin/tool", "#!/bin/sh\n").mode("site/bin/tool", 0o755);
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    executable_bits_from_a_tgz => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.file("site/bin/tool", "#!/bin/sh\n").mode("site/bin/tool", 0o755);
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    a_symlink_to_a_file_from_a_tgz => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.symlink("site/latest.html", "index.html");
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    a_symlink_to_a_directory, known::DIR_SYMLINK => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.symlink("site/styles", "css");
        s.deploy(&b, "tgz", &["-g", "g1"]);
    };
    yaml_tabs_after_keys => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&format!("version: 0.0\nos:\tlinux\nfiles:\n  - source:\tsite\n    destination:\t{}\nhooks:\n  AfterInstall:\n    - location:\thooks/rec.sh\n", s.dest().display()));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    yaml_with_a_byte_order_mark, known::BOM => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&format!("\u{feff}{}", files_appspec(s, "hooks:\n  AfterInstall:\n    - location: hooks/rec.sh\n")));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    yaml_anchors_aliases_and_flow_style, known::ALIASES => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&format!("version: 0.0\nos: linux\nfiles: [{{source: site, destination: {}}}]\nhooks:\n  AfterInstall: &rec\n    - location: hooks/rec.sh\n      timeout: 30\n  ApplicationStart: *rec\n", s.dest().display()));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    yaml_quoted_numbers_and_comments => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&format!("# deployed by CI\nversion: 0.0 # the only one\nos: linux\nfiles:\n  - source: site # the site\n    destination: '{}'\nhooks:\n  AfterInstall:\n    - location: \"hooks/rec.sh\"\n      timeout: \"60\"\n", s.dest().display()));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    a_version_other_than_0_0_fails => |s: &mut Side| {
        let b = site_with_hooks(s, &["AfterInstall"]);
        b.appspec(&format!("version: 1.0\nos: linux\nfiles:\n  - source: site\n    destination: {}\n", s.dest().display()));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    an_appspec_for_windows_fails => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.appspec(&format!("version: 0.0\nos: windows\nfiles:\n  - source: site\n    destination: {}\n", s.dest().display()));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    a_hook_with_lots_of_output => |s: &mut Side| {
        let b = site_with_hooks(s, &[]);
        b.file("hooks/noisy.sh", "#!/bin/sh\nseq 1 20000\nseq 1 500 >&2\n").mode("hooks/noisy.sh", 0o755);
        b.appspec(&files_appspec(s, "hooks:\n  AfterInstall:\n    - location: hooks/noisy.sh\n    - location: hooks/rec.sh\n"));
        s.deploy(&b, "directory", &["-g", "g1"]);
    };
    three_deployments_keep_the_records_right => |s: &mut Side| {
        for v in ["v1", "v2", "v3"] {
            let b = site_with_hooks(s, &["ApplicationStop", "AfterInstall"]);
            b.file("site/index.html", &format!("{v}\n")).file(&format!("site/{v}.txt"), v);
            s.deploy(&b, "zip", &["-g", "g1"]);
        }
    };
}
