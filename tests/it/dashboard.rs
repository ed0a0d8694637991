//! The scheduler's web server: Prometheus metrics, and the dashboard page
//! rendered by a real browser (headless Chromium) while a job runs.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use dfut_tests::*;

use crate::util::{LIMIT, Processes, cluster_with, dfut_tool, eventually, free_port, tempdir};

/// A local cluster of two workers whose scheduler serves HTTP; the
/// server's base address and token.
fn served() -> (dfut::Runtime, String, String) {
    let rt = cluster_with(2, |b| b.http("127.0.0.1:0".parse().unwrap()));
    let url = rt.dashboard_url().expect("the scheduler serves HTTP");
    let (base, token) = url.split_once("/?token=").expect("a URL with its token");
    let (base, token) = (base.to_owned(), token.to_owned());
    (rt, base, token)
}

/// GET `url`, with `token` as a bearer token if given: the body, or the
/// status code of a refusal.
fn get(url: &str, token: Option<&str>) -> Result<String, u16> {
    let mut request = ureq::get(url);
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    match request.call() {
        Ok(mut response) => Ok(response.body_mut().read_to_string().unwrap()),
        Err(ureq::Error::StatusCode(code)) => Err(code),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// The samples of a scrape, parsed by a Prometheus text parser.
fn scrape(base: &str, token: &str) -> Vec<prometheus_parse::Sample> {
    let text = get(&format!("{base}/metrics"), Some(token)).expect("metrics served");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid exposition text")
        .samples
}

/// The sum of the values of `metric` over the samples whose labels
/// include every pair of `want` (function names matched by suffix).
fn total(samples: &[prometheus_parse::Sample], metric: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| {
            want.iter().all(|(k, v)| match (*k, s.labels.get(k)) {
                ("function", Some(f)) => f.ends_with(v),
                (_, got) => got == Some(v),
            })
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_count_tasks_by_function_with_run_time_histograms_behind_the_token() {
    let (rt, base, token) = served();
    let _g = rt.enter();
    for i in 0..40 {
        assert_eq!(echo(i).get_timeout(LIMIT), Ok(i));
    }
    for _ in 0..3 {
        assert!(explode("metered").get_timeout(LIMIT).is_err());
    }
    let slow: Vec<_> = (0..10).map(|i| slow_echo(i, 20)).collect();
    for (i, f) in slow.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
    assert_eq!(get(&format!("{base}/metrics"), None), Err(401));
    assert_eq!(
        get(&format!("{base}/metrics"), Some("not-the-token")),
        Err(401)
    );
    assert!(get(&format!("{base}/metrics?token={token}"), None).is_ok());
    let samples = scrape(&base, &token);
    let finished = [("function", "::echo"), ("state", "finished")];
    assert_eq!(total(&samples, "dfut_tasks_total", &finished), 40.0);
    let failed = [("function", "explode"), ("state", "failed")];
    assert_eq!(total(&samples, "dfut_tasks_total", &failed), 3.0);
    assert_eq!(total(&samples, "dfut_workers", &[("state", "alive")]), 2.0);
    for w in rt.client().workers() {
        let addr = w.addr.to_string();
        let worker = [("worker", addr.as_str())];
        assert_eq!(total(&samples, "dfut_worker_up", &worker), 1.0, "{addr}");
        assert_eq!(total(&samples, "dfut_worker_metrics_up", &worker), 1.0);
        assert_eq!(total(&samples, "dfut_worker_slots", &worker), 2.0);
    }
    // The histogram of the 20 ms sleeps: none at or under 10 ms, all ten
    // counted, their run times added up to at least 0.2 s.
    let buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.metric == "dfut_task_run_seconds")
        .filter(|s| {
            s.labels
                .get("function")
                .is_some_and(|f| f.ends_with("slow_echo"))
        })
        .flat_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(h) => {
                h.iter().map(|c| (c.less_than, c.count)).collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
        .collect();
    let upto = |bound: f64| -> f64 {
        buckets
            .iter()
            .filter(|(le, _)| *le == bound)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(upto(0.01), 0.0, "{buckets:?}");
    assert_eq!(upto(f64::INFINITY), 10.0, "{buckets:?}");
    let runs = [("function", "slow_echo")];
    assert_eq!(total(&samples, "dfut_task_run_seconds_count", &runs), 10.0);
    assert!(total(&samples, "dfut_task_run_seconds_sum", &runs) >= 0.2);
    // The finished counts in the heartbeats reach the gauges too.
    assert!(eventually(LIMIT, || {
        let s = scrape(&base, &token);
        total(&s, "dfut_tasks", &[("state", "running")]) == 0.0
    }));
    // A 1 MiB result kept on a worker shows in the store's gauges (heap,
    // shared memory or disk), and as an object.
    let kept = dfut_tests::made_here(1 << 20);
    kept.get_timeout(LIMIT).unwrap();
    assert!(eventually(LIMIT, || {
        let s = scrape(&base, &token);
        total(&s, "dfut_object_store_bytes", &[]) >= f64::from(1u32 << 20)
            && total(&s, "dfut_objects", &[]) >= 1.0
    }));
    let s = scrape(&base, &token);
    for place in ["heap", "shm", "disk"] {
        assert!(
            s.iter()
                .any(|x| x.metric == "dfut_object_store_bytes"
                    && x.labels.get("place") == Some(place)),
            "no {place} sample"
        );
    }
}

/// The page as headless Chromium renders it once its script has run.
fn rendered(url: &str) -> String {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(browser) = browser else {
        panic!(
            "no headless browser: install Debian's `chromium` package \
             (scripts/test.sh does)"
        );
    };
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=4000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("the browser runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in `dom` (no nested tags).
fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(&rest[start..start + end])
}

#[test]
fn the_dashboard_shows_live_workers_and_moving_counts_in_a_real_browser() {
    let (rt, base, token) = served();
    let _g = rt.enter();
    let url = format!("{base}/?token={token}");
    assert_eq!(
        get(&format!("{base}/"), None),
        Err(401),
        "the page needs the token"
    );
    // A job that runs while the page is loaded, however long the browser
    // takes: batches of 2 ms tasks until told to stop; plus a failure to
    // list.
    assert!(
        explode("shown on the dashboard")
            .get_timeout(LIMIT)
            .is_err()
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let job = {
        let (rt, stop) = (rt.clone(), stop.clone());
        std::thread::spawn(move || {
            let _g = rt.enter();
            let mut done = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<_> = (0..40).map(|i| slow_echo(i, 2)).collect();
                for (i, f) in batch.iter().enumerate() {
                    assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
                }
                done += 40;
            }
            done
        })
    };
    assert!(eventually(LIMIT, || {
        let s = get(&format!("{base}/api/state"), Some(&token)).unwrap();
        let s: serde_json::Value = serde_json::from_str(&s).unwrap();
        s["tasks"]["finished"].as_u64() > Some(40)
    }));
    let first = rendered(&url);
    let count = |dom: &str, id: &str| -> u64 {
        text_of(dom, id)
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no number in #{id}: {dom}"))
    };
    for w in rt.client().workers() {
        let row = format!("<tr data-addr=\"{}\">", w.addr);
        assert!(first.contains(&row), "worker {} listed: {first}", w.addr);
    }
    assert_eq!(text_of(&first, "nworkers"), Some("2"));
    assert!(first.contains("class=\"alive\">alive<"), "{first}");
    assert!(
        first.contains("shown on the dashboard"),
        "the failure listed: {first}"
    );
    let before = count(&first, "finished");
    assert!(before > 0, "{first}");
    std::thread::sleep(Duration::from_millis(500));
    let mut later = String::new();
    assert!(
        eventually(LIMIT, || {
            later = rendered(&url);
            count(&later, "finished") > before
        }),
        "the finished count moves: {before} then {later}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ran = job.join().expect("the job thread");
    // The JSON the page polls, checked directly.
    let state: serde_json::Value =
        serde_json::from_str(&get(&format!("{base}/api/state"), Some(&token)).unwrap()).unwrap();
    let by_addr: HashMap<String, &serde_json::Value> = state["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["addr"].as_str().unwrap().to_owned(), w))
        .collect();
    assert_eq!(by_addr.len(), 2);
    assert!(eventually(LIMIT, || {
        let s: serde_json::Value =
            serde_json::from_str(&get(&format!("{base}/api/state"), Some(&token)).unwrap())
                .unwrap();
        s["tasks"]["finished"].as_u64() >= Some(ran)
    }));
    if let Ok(path) = std::env::var("DFUT_DASHBOARD_SCREENSHOT") {
        screenshot(&url, &path);
    }
}

/// Saves a picture of the page at `url` to `path` (for the README).
fn screenshot(url: &str, path: &str) {
    let ok = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1000",
            "--virtual-time-budget=4000",
            &format!("--screenshot={path}"),
            url,
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "screenshot to {path}");
}

#[test]
fn the_tool_serves_metrics_with_the_token_it_is_given() {
    // `dfut scheduler --http ADDR` with the token from `DFUT_HTTP_TOKEN`.
    let dir = tempdir("http-token");
    let pem = dir.join("cluster.pem");
    let (port, http) = (free_port(), free_port());
    let token = "a-token-of-32-characters-given-1";
    let mut procs = Processes::default();
    procs.start(
        Command::new(dfut_tool())
            .args([
                "scheduler",
                "--port",
                &port.to_string(),
                "--credential-file",
            ])
            .arg(&pem)
            .args(["--http", &format!("127.0.0.1:{http}")])
            .env("DFUT_HTTP_TOKEN", token),
    );
    let base = format!("http://127.0.0.1:{http}");
    let answered = || {
        ureq::get(&format!("{base}/metrics"))
            .call()
            .map_or_else(|e| matches!(e, ureq::Error::StatusCode(_)), |_| true)
    };
    assert!(
        eventually(LIMIT, answered),
        "the scheduler never served HTTP"
    );
    assert_eq!(get(&format!("{base}/metrics"), None), Err(401));
    let body = get(&format!("{base}/metrics"), Some(token)).unwrap();
    assert!(body.contains("dfut_workers"), "{body}");
}
