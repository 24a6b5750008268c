//! The policy route's set for bench/run, and the CPU cost of one Cedar decision.
//!
//! `bench_policy write DIR`: writes `schema.cedarschema` and `bench.cedar` (50 policies: the
//! owner reads their own items, 45 role grants for other routes, and three `forbid` rules
//! with time and network conditions that every call evaluates) for the bench's
//! `/policy/{owner}/{item}` route (`Route::"bench-policy"`).
//!
//! `bench_policy measure [N]`: loads that set and decides N calls (default 200,000) of a
//! session with a realistic set of claims, allowed and denied; prints the process CPU time
//! per decision (the whole of it: entities, context, evaluation), with the session's context
//! shared by the calls of one second (`warm`) and made anew for each call (`cold`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse::config::PolicySettings;
use gatehouse::policy::{evaluate, load_set, Authorizer, CallFacts, TypeNames, Verdict};
use gatehouse::session::SessionData;

const SCHEMA: &str = r#"
entity Role;
entity User in [Role] { sub: String, email?: String, department?: String };
entity Route { owner?: String, item?: String };
type RequestContext = {
  ip: ipaddr, now: Long, hour: Long, weekday: Long, amr: Set<String>, provider: String,
  acr?: String, auth_age?: Long,
};
action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" appliesTo {
  principal: [User], resource: [Route], context: RequestContext,
};
"#;

fn policies() -> String {
    let mut text = String::from(
        r#"
@id("owners-read-their-items")
permit (principal, action == Action::"GET", resource == Route::"bench-policy")
when { resource has owner && resource.owner == principal.sub };

@id("support-reads-all-items")
permit (principal in Role::"support", action == Action::"GET", resource == Route::"bench-policy");

@id("no-writes-outside-office-hours")
forbid (principal, action, resource)
when { action != Action::"GET" && action != Action::"HEAD" }
unless { context.hour >= 9 && context.hour < 17 };

@id("no-calls-from-the-quarantine-network")
forbid (principal, action, resource)
when { context.ip.isInRange(ip("192.0.2.0/24")) };

@id("mfa-for-deletes")
forbid (principal, action == Action::"DELETE", resource)
unless { context has acr && context.acr == "urn:example:mfa" };
"#,
    );
    for i in 1..=45 {
        text.push_str(&format!(
            "\n@id(\"team-{i}-reads-route-{i}\")\npermit (principal in Role::\"team-{i}\", \
             action == Action::\"GET\", resource == Route::\"route-{i}\")\nwhen {{ principal has \
             department && principal.department == \"dept-{i}\" }};\n"
        ));
    }
    text
}

fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("schema.cedarschema"), SCHEMA)?;
    std::fs::write(dir.join("bench.cedar"), policies())
}

fn session() -> SessionData {
    serde_json::from_value(serde_json::json!({
        "provider": "bench",
        "sub": "bench-user",
        "provider_sid": "sid",
        "claims": {
            "sub": "bench-user", "name": "Bench User", "preferred_username": "bench-user",
            "email": "bench-user@example.test", "email_verified": true,
            "roles": ["user", "team-3", "team-7"], "department": "dept-3",
            "groups": ["a", "b", "c"], "updated_at": 1_700_000_000
        },
        "authentication": { "acr": "urn:example:pwd", "amr": ["pwd"], "auth_time": 1_700_000_000 },
        "tokens": {
            "access_token": "a", "access_token_expires_at": null, "refresh_token": null,
            "id_token": "i", "scope": "openid"
        },
        "logout_sid": "l",
        "created_at": 0,
        "absolute_expires_at": 0
    }))
    .expect("a session")
}

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn measure(count: u32) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-policy-{}", std::process::id()));
    write(&dir)?;
    // The bench's route, through the one config parser.
    let config = format!(
        "[server]\npublic_url = \"https://app.example.com\"\n\
         [providers.main]\nissuer = \"https://id.example.com\"\nclient_id = \"bench\"\n\
         [policies]\nfiles = [\"{}\"]\nschema = \"{}\"\n\
         [[routes]]\nprefix = \"/policy\"\nupstream = \"http://127.0.0.1:9\"\n\
         name = \"bench-policy\"\npath = \"/{{owner}}/{{item}}\"\nmethods = [\"GET\"]\npolicy = true\n",
        dir.join("bench.cedar").display(),
        dir.join("schema.cedarschema").display()
    );
    let settings = gatehouse::config::load(
        Some(&config),
        [(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".to_owned(),
            "not-used".to_owned(),
        )],
    )?;
    let policy_settings: &PolicySettings = settings.policies.as_ref().ok_or("no [policies]")?;
    // With the route: its subset per method, as gatehouse serves it; without: all 50.
    let sets = [
        ("route subset", load_set(policy_settings, &settings.routes)?),
        ("whole set", load_set(policy_settings, &[])?),
    ];
    let _ = std::fs::remove_dir_all(&dir);
    let session = session();
    let authorizer = Authorizer::new();
    let names = TypeNames::new();
    let now = 1_764_000_000_000 + 11 * 3_600_000;
    for ((label, owner, expected), (evaluated, set)) in [
        ("allowed (own item)", "bench-user", true),
        ("denied (another's item)", "someone-else", false),
    ]
    .into_iter()
    .flat_map(|case| sets.iter().map(move |set| (case, set)))
    {
        let parameters = [("owner", owner.to_owned()), ("item", "42".to_owned())];
        let facts = |now| CallFacts {
            session: &session,
            method: "GET",
            route_name: "bench-policy",
            parameters: &parameters,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            now,
            roles_claim: "roles",
        };
        let verdict = evaluate(&authorizer, &names, set, &facts(now));
        assert_eq!(verdict == Verdict::Allow, expected, "{label}: {verdict:?}");
        // warm: the calls of one second share the session's context (the steady state of a
        // busy session); cold: every call is a new second and builds its context.
        for (context, step) in [("warm", 0), ("cold", 1000)] {
            for i in 0..count / 10 {
                std::hint::black_box(evaluate(
                    &authorizer,
                    &names,
                    set,
                    &facts(now + i64::from(i) * step),
                ));
            }
            let started = cpu_time();
            for i in 0..count {
                std::hint::black_box(evaluate(
                    &authorizer,
                    &names,
                    set,
                    &facts(now + i64::from(i) * step),
                ));
            }
            let per_call = (cpu_time() - started).as_secs_f64() * 1e6 / f64::from(count);
            println!(
                "RESULT case={} evaluated={} context={context} policies={} decisions={count} cpu_us_per_decision={per_call:.2}",
                label.split(' ').next().unwrap_or(label),
                evaluated.replace(' ', "-"),
                set.sources.len()
            );
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") => {
            let dir = args.get(1).ok_or("write DIR")?;
            write(&PathBuf::from(dir))?;
            Ok(())
        }
        Some("measure") => {
            let count = args.get(1).map_or(Ok(200_000), |n| n.parse())?;
            measure(count)
        }
        _ => Err("usage: bench_policy write DIR | measure [N]".into()),
    }
}
