//! HTTP load from this process against the server process: closed-loop (as fast as the
//! server answers) and paced (a fixed total rate).

use std::time::{Duration, Instant};

use futures::future::join_all;

pub struct LoadResult {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which `p` (0..=1) of the requests fall.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

/// `connections` workers each send GET `url` back to back (closed loop) for `duration`; with
/// `rate` set, the workers together pace themselves to that many requests per second.
pub async fn run(
    url: &str,
    token: &str,
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
) -> LoadResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap_or_default();
    let started = Instant::now();
    let deadline = started + duration;
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
    let workers = (0..connections).map(|i| {
        let client = client.clone();
        let url = url.to_owned();
        let token = token.to_owned();
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            // Spread the paced workers' start over one interval.
            let mut next = started
                + interval.map_or(Duration::ZERO, |iv| {
                    iv.mul_f64(i as f64 / connections as f64)
                });
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let sent = Instant::now();
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }
    });
    let results = join_all(workers).await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for (l, e) in results {
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    LoadResult {
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}
