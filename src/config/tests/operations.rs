//! `config::load` for the keys of running it: the admin API's operator tokens and the trace
//! export.

use super::*;

#[test]
fn operator_tokens_are_name_colon_token_lines_on_an_admin_listener() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let dir = std::env::temp_dir().join(format!("gatehouse-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let with_file = |name: &str, text: &str, bind: bool| {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("write");
        let bind = if bind {
            "bind = \"127.0.0.1:9100\"\n"
        } else {
            ""
        };
        let config = format!(
            "{MINIMAL}\n[admin]\n{bind}api_token_file = \"{}\"\n",
            file.display()
        );
        load(Some(&config), secret.clone())
    };
    let token_a = crate::session::crypto::b64(&[3u8; 32]);
    let token_b = crate::session::crypto::b64(&[4u8; 32]);
    let good = format!("# who:token\noncall:{token_a}\n\nsoar-bot:{token_b}\n");
    let settings = with_file("good", &good, true).expect("valid");
    let names: Vec<&str> = settings
        .admin
        .api_tokens
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["oncall", "soar-bot"]);
    assert!(
        !format!("{settings:?}").contains(&token_a),
        "Debug shows no token"
    );

    let problems = |result: Result<Settings, ConfigErrors>| result.expect_err("refused").0;
    let without_bind = problems(with_file("nobind", &good, false));
    assert!(
        without_bind.iter().any(|p| p.contains("admin.bind is not")),
        "{without_bind:?}"
    );
    let bad =
        format!("{token_a}\nshort:abc\noncall:{token_a}\noncall:{token_b}\nbad name:{token_b}\n");
    let found = problems(with_file("bad", &bad, true));
    for expected in [
        "line 1: expected `name:token`",
        "line 2: the token of `short` is shorter",
        "line 4: the name `oncall` appears twice",
        "line 5: the name must be",
    ] {
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{expected}: {found:?}"
        );
    }
    assert!(
        found
            .iter()
            .all(|p| !p.contains(&token_a) && !p.contains(&token_b)),
        "no problem quotes a token: {found:?}"
    );
    let empty = problems(with_file("empty", "# nobody\n", true));
    assert!(
        empty
            .iter()
            .any(|p| p.contains("holds no `name:token` line")),
        "{empty:?}"
    );
}

#[test]
fn telemetry_is_off_by_default_and_its_keys_are_checked() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let settings = load(Some(MINIMAL), secret.clone()).expect("valid");
    assert!(settings.telemetry.otlp_endpoint.is_none(), "off by default");
    assert_eq!(settings.telemetry.queue_size, 2048);

    let mut on = secret.clone();
    on.push((
        "GATEHOUSE_TELEMETRY__OTLP_ENDPOINT".into(),
        "http://collector:4318".into(),
    ));
    on.push(("GATEHOUSE_TELEMETRY__QUEUE_SIZE".into(), "64".into()));
    let settings = load(Some(MINIMAL), on).expect("valid");
    assert_eq!(
        settings.telemetry.otlp_endpoint.expect("set").as_str(),
        "http://collector:4318/v1/traces",
        "a bare origin gets the standard path"
    );
    assert_eq!(settings.telemetry.queue_size, 64);

    let text = format!(
        "{MINIMAL}\n[telemetry]\notlp_endpoint = \"http://c/custom/traces\"\nqueue_size = 0\n\
         export_timeout_secs = 0\nservice_name = \" \"\n"
    );
    let ConfigErrors(problems) = load(Some(&text), secret.clone()).expect_err("invalid");
    for key in ["queue_size", "export_timeout_secs", "service_name"] {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&format!("telemetry.{key}"))),
            "{key}: {problems:?}"
        );
    }
    let text = format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"ftp://c\"\n");
    let ConfigErrors(problems) = load(Some(&text), secret).expect_err("invalid");
    assert!(
        problems[0].contains("telemetry.otlp_endpoint"),
        "{problems:?}"
    );
}
