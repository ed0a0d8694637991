//! The RAG workload on real worker processes: the manual-page corpus, the
//! sharded BM25 index built by tasks, and the quality of the pipeline.

use dfut_benches::rag::{Rag, corpus};

use crate::util::{LIMIT, cluster};

#[test]
fn the_manual_pages_are_answered_from_with_recall_above_ninety_percent() {
    let corpus = corpus::load().unwrap_or_else(|e| panic!("the corpus: {e}"));
    let (pages, chunks) = (corpus.pages.len(), corpus.chunks.len());
    assert!((1_000..1_300).contains(&pages), "{pages} pages");
    assert!((7_000..11_000).contains(&chunks), "{chunks} chunks");
    let longest = corpus
        .chunks
        .iter()
        .map(|c| c.text.split_once(": ").map_or(0, |(_, t)| t.len()))
        .max();
    assert!(longest <= Some(corpus::CHUNK_CHARS), "{longest:?}");
    let pipe = corpus
        .pages
        .iter()
        .find(|p| p.name == "pipe" && p.section == "2")
        .expect("pipe(2) is in the corpus");
    assert_eq!(pipe.summary, "pipe, pipe2 - create pipe");
    assert!(pipe.see_also.contains(&("fork".to_owned(), "2".to_owned())));

    let rt = cluster(2);
    let _g = rt.enter();
    let rag = Rag::build(corpus, 32).unwrap();
    let (found, asked) = rag.recall_at_10().unwrap();
    let recall = found as f64 / asked as f64;
    assert!(recall >= 0.90, "recall@10 {recall:.3} ({found} of {asked})");
    let answer = rag.ask("how do I create a pipe", None).unwrap();
    assert!(
        answer.citations.iter().any(|c| c.starts_with("pipe(")),
        "{answer:?}"
    );
    assert!(!answer.follow_ups.is_empty(), "{answer:?}");

    // The agent's pattern: one retrieval future on a worker, read in place
    // by generation steps, answers as the driver would.
    let question = "how do I create a pipe";
    let context = rag.context(question, 10);
    let hits = rag.retrieve(question, 10).unwrap();
    let texts: Vec<&str> = hits
        .iter()
        .map(|(c, _)| rag.corpus.chunks[*c as usize].text.as_str())
        .collect();
    let here = dfut_benches::rag::answer::quote(question, &texts).0;
    for _ in 0..3 {
        assert_eq!(
            dfut_benches::rag::rag_generate(&context, question.to_owned()).get_timeout(LIMIT),
            Ok(here.clone())
        );
    }

    // The same question through an OpenAI-compatible endpoint.
    let (url, request) = chat_server("Call pipe() [pipe(2)] to get two descriptors.");
    let llm = dfut_benches::rag::llm::Llm {
        url,
        model: "test-model".into(),
    };
    let answer = rag.ask("how do I create a pipe", Some(&llm)).unwrap();
    assert_eq!(answer.text, "Call pipe() [pipe(2)] to get two descriptors.");
    assert_eq!(answer.citations, vec!["pipe(2)"]);
    assert!(!answer.follow_ups.is_empty());
    let (head, body) = request.join().unwrap();
    assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["model"], "test-model");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("how do I create a pipe"), "{user}");
    assert!(
        user.contains("[pipe(2)]"),
        "the sources are labelled: {user}"
    );
}

/// A local server speaking the chat-completions protocol for one request:
/// it answers `content` and hands back the request's head and body.
fn chat_server(content: &str) -> (String, std::thread::JoinHandle<(String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let reply = serde_json::json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]
    })
    .to_string();
    let served = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    (url, served)
}

#[test]
fn shards_are_kept_up_to_the_capacity_shared_by_concurrent_misses_and_rebuilt_alike() {
    use std::sync::atomic::Ordering;
    let corpus = corpus::load().unwrap_or_else(|e| panic!("the corpus: {e}"));
    let rt = cluster(2);
    let _g = rt.enter();
    let rag = Rag::new(corpus, 32, 2).unwrap();
    // Two uses of one shard before its build ends: one build.
    let (a, b) = (rag.shards.get(5), rag.shards.get(5));
    assert_eq!(a.id(), b.id());
    assert_eq!(rag.shards.misses.load(Ordering::Relaxed), 1);
    assert_eq!(rag.shards.hits.load(Ordering::Relaxed), 1);
    drop((a, b));
    // A question searching 4 shards with room for 2: built, evicted, and
    // built again the second time, with the same answer.
    let question = "how do I create a pipe";
    let first = rag.retrieve(question, 10).unwrap();
    assert!(rag.shards.resident().len() <= 2);
    let again = rag.retrieve(question, 10).unwrap();
    assert_eq!(first, again, "a rebuilt shard answers the same");
    assert!(rag.shards.misses.load(Ordering::Relaxed) >= 5);
    let held = || -> u64 { rt.client().workers().iter().map(|w| w.load.objects).sum() };
    assert!(
        crate::util::eventually(crate::util::LIMIT, || held() == 2),
        "evicted shards are freed on their workers: {} held",
        held()
    );
    // With room for all, the second time is all hits.
    rag.shards.set_capacity(32);
    rag.shards.clear();
    rag.retrieve(question, 10).unwrap();
    let misses = rag.shards.misses.load(Ordering::Relaxed);
    assert_eq!(rag.retrieve(question, 10).unwrap(), first);
    assert_eq!(rag.shards.misses.load(Ordering::Relaxed), misses);

    // The same answers whatever is kept: nothing (built per question),
    // two shards, everything.
    let questions: Vec<String> = rag
        .corpus
        .pages
        .iter()
        .step_by(97)
        .map(|p| p.summary.clone())
        .collect();
    let answers = |capacity: usize| -> Vec<Vec<(u32, f32)>> {
        rag.shards.clear();
        rag.shards.set_capacity(capacity);
        questions
            .iter()
            .map(|q| rag.retrieve(q, 10).unwrap())
            .collect()
    };
    let all = answers(32);
    assert_eq!(answers(0), all, "no reuse");
    assert_eq!(answers(2), all, "two shards resident");
}

#[test]
fn a_worker_killed_mid_trace_loses_no_question() {
    let corpus = corpus::load().unwrap_or_else(|e| panic!("the corpus: {e}"));
    let rt = cluster(2);
    let _g = rt.enter();
    let rag = Rag::build(corpus, 32).unwrap();
    let questions: Vec<(usize, String)> = rag
        .corpus
        .pages
        .iter()
        .enumerate()
        .step_by(25)
        .map(|(i, p)| (i, p.summary.clone()))
        .collect();
    let victim = rt.worker_pids()[0];
    let members = crate::util::worker_ids(&rt);
    for (n, (page, question)) in questions.iter().enumerate() {
        if n == questions.len() / 3 {
            crate::util::signal(victim, "-KILL");
        }
        let hits = rag
            .retrieve(question, 10)
            .unwrap_or_else(|e| panic!("question {n} ({question}): {e}"));
        assert!(
            hits.iter()
                .any(|(c, _)| rag.corpus.chunks[*c as usize].page as usize == *page),
            "question {n} ({question}) found its page"
        );
    }
    assert!(
        crate::util::one_left(&rt, &members),
        "the killed worker left the cluster"
    );
}

#[test]
fn a_question_never_waits_behind_a_prefetch_build() {
    use std::sync::atomic::Ordering;
    let corpus = corpus::load().unwrap_or_else(|e| panic!("the corpus: {e}"));
    let rt = cluster(2);
    let _g = rt.enter();
    let rag = Rag::new(corpus, 32, 8).unwrap();
    let question = "how do I create a pipe";
    let expected = rag.retrieve(question, 10).unwrap();
    rag.shards.clear();
    // Every slot busy with demand work: background work cannot start.
    // (A deadline keeps them off the inline path, so they report their
    // start.)
    let busy: Vec<_> = dfut::Options::new()
        .timeout(std::time::Duration::from_secs(60))
        .call(|| (0..8).map(|i| dfut_tests::slow_echo(i, 1500)).collect());
    assert!(crate::util::eventually(LIMIT, || busy
        .iter()
        .filter(|f| f.status() == dfut::Status::Running)
        .count()
        == 4));
    let shards = rag.route(question);
    let prefetched: Vec<_> = shards.iter().map(|&s| rag.shards.warm_low(s)).collect();
    // The question finds its shards' prefetch builds not started: it builds
    // them at normal priority instead of queueing behind them.
    let answer = rag.retrieve(question, 10).unwrap();
    assert_eq!(answer, expected, "the same answer");
    assert_eq!(
        rag.shards.promoted.load(Ordering::Relaxed),
        shards.len() as u64,
        "every shard promoted"
    );
    for (i, f) in busy.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
    drop(prefetched);
}
