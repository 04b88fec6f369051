// banditloop dashboard: polls the loop's /dashboard/data and draws it with uPlot.
(function () {
  "use strict";
  const REFRESH_MS = 5000;
  const body = document.body;
  const baseUrl = body.dataset.url;
  const KEY = "banditloop-key";

  // A key given as ?key= is kept for this tab only and removed from the address bar.
  const params = new URLSearchParams(location.search);
  let key = params.get("key");
  if (key) {
    sessionStorage.setItem(KEY, key);
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  } else {
    key = sessionStorage.getItem(KEY);
  }

  const state = { charts: {}, points: 0, refreshes: 0, errors: 0, data: null };
  window.banditloopDashboard = state;

  const $ = (id) => document.getElementById(id);
  const fmt = (x, digits = 2) =>
    x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
  const esc = (s) =>
    String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  function width(el) {
    return Math.max(300, el.clientWidth || 500);
  }

  function makeChart(id, series, data, opts = {}) {
    const el = $(id);
    const existing = state.charts[id];
    if (existing && existing.series.length === series.length + 1) {
      existing.setData(data);
      return existing;
    }
    if (existing) existing.destroy();
    const chart = new uPlot(
      {
        width: width(el),
        height: 220,
        series: [{}, ...series],
        axes: opts.axes || [{}, { size: 55 }],
        scales: {
          // one sample (a fresh server) would otherwise stretch the time axis over years
          x: {
            time: true,
            range: (u) => {
              const xs = u.data[0];
              const lo = xs.length ? xs[0] : 0;
              const hi = xs.length ? xs[xs.length - 1] : 1;
              return hi - lo < 60 ? [lo - 60, hi + 60] : [lo, hi];
            },
          },
          ...(opts.scales || {}),
        },
        bands: opts.bands || [],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      },
      data,
      el,
    );
    state.charts[id] = chart;
    return chart;
  }

  function line(label, stroke, extra = {}) {
    return { label, stroke, width: 2, spanGaps: false, ...extra };
  }

  function band(label, stroke) {
    return { label, stroke, width: 0, dash: [4, 4], points: { show: false } };
  }

  function countPoints(arr) {
    return (arr || []).filter((v) => v !== null && v !== undefined).length;
  }

  // An estimate, or "not estimable" with the reason (the logs cannot tell: evaluation.md).
  function estimateTile(label, e) {
    if (e.estimable === false) return tile(label, "not estimable", e.reason);
    return tile(label, fmt(e.value, 3), `[${fmt(e.low, 3)}, ${fmt(e.high, 3)}] · ESS ${fmt(e.effectiveSampleSize, 0)}`);
  }

  function estimateCells(p) {
    const dg = p.diagnostics;
    if (dg && dg.estimable === false) return `<td colspan="2">not estimable: ${esc(dg.reason)}</td>`;
    return `<td>${fmt(p.expectedReward, 4)}</td><td>[${fmt(p.low, 4)}, ${fmt(p.high, 4)}]</td>`;
  }

  function tile(label, value, sub) {
    return `<div class="tile"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div>${sub ? `<div class="sub">${esc(sub)}</div>` : ""}</div>`;
  }

  function render(d) {
    const s = d.series;
    const t = s.t;
    const tot = d.totals;
    const rr = tot.rewardRate;
    $("mode").textContent = d.learningMode;
    const last = (arr) => {
      for (let i = arr.length - 1; i >= 0; i--) if (arr[i] !== null) return arr[i];
      return null;
    };
    const tiles = [
      tile("events / min", fmt(last(s.events), 1), `${tot.events} in window`),
      tile("rewards / min", fmt(last(s.rewards), 1), `${tot.rewards} in window`),
      tile("rewarded in time", pct(tot.rewardedShare), "share of closed events"),
      tile("late rewards", tot.late, "after rewardWaitTime"),
      tile("orphan rewards", tot.orphan, "no such event"),
      tile("exploration", pct(tot.exploration), "draw ≠ greedy action"),
      tile("pmf entropy", fmt(tot.entropy, 3), "mean, nats"),
      estimateTile("online reward", rr.online),
      estimateTile("baseline reward", rr.baseline),
      estimateTile("random reward", rr.random),
      tile("trainer lag", fmt(d.trainer.lagSeconds, 1) + " s", `${d.trainer.backlog} waiting`),
      tile("model version", d.trainer.modelVersion, `${d.trainer.eventsLearned} events learned`),
      tile("failed events", tot.failed, "VW could not learn them: skipped"),
    ];
    if (tot.imitation !== null && tot.imitation !== undefined) {
      tiles.push(tile("imitation", pct(tot.imitation), "apprentice: draw = baseline"));
    }
    $("tiles").innerHTML = tiles.join("");

    makeChart("chart-traffic", [line("events/min", "#3552c8"), line("rewards/min", "#2e9e5b")], [t, s.events, s.rewards]);

    const r = s.rewardRate;
    makeChart(
      "chart-reward",
      [
        line("online", "#3552c8"),
        band("online low", "#3552c8"),
        band("online high", "#3552c8"),
        line("baseline", "#e08a1e"),
        band("baseline low", "#e08a1e"),
        band("baseline high", "#e08a1e"),
        line("random", "#8a8f9c"),
        band("random low", "#8a8f9c"),
        band("random high", "#8a8f9c"),
      ],
      [t, r.online.value, r.online.low, r.online.high, r.baseline.value, r.baseline.low, r.baseline.high, r.random.value, r.random.low, r.random.high],
      {
        bands: [
          { series: [3, 2], fill: "rgba(53,82,200,0.12)" },
          { series: [6, 5], fill: "rgba(224,138,30,0.12)" },
          { series: [9, 8], fill: "rgba(138,143,156,0.12)" },
        ],
      },
    );

    const shares = [line("rewarded", "#2e9e5b"), line("exploration", "#c0392b")];
    const shareData = [t, s.rewardedShare, s.exploration];
    if (s.imitation) {
      shares.push(line("imitation", "#8e44ad"));
      shareData.push(s.imitation);
    }
    makeChart("chart-shares", shares, shareData, { scales: { y: { range: [0, 1] } } });
    makeChart("chart-entropy", [line("entropy", "#16a2b8")], [t, s.entropy]);
    makeChart("chart-late", [line("late", "#e08a1e"), line("orphan", "#c0392b")], [t, s.late, s.orphan]);
    const h = d.history;
    makeChart(
      "chart-trainer",
      [line("lag (s)", "#c0392b", { scale: "s" }), line("events learned", "#3552c8", { scale: "n" })],
      [h.t, h.lagSeconds, h.eventsLearned],
      {
        scales: { s: {}, n: {} },
        axes: [{}, { scale: "s", size: 55 }, { scale: "n", side: 1, size: 60, grid: { show: false } }],
      },
    );

    $("models").innerHTML =
      "<tr><th>version</th><th>saved</th><th>events learned</th><th>lineage since</th></tr>" +
      d.models.map((m) => `<tr><td>${m.number}</td><td>${esc(m.created)}</td><td>${m.eventsLearned}</td><td>${esc(m.born)}</td></tr>`).join("");

    const lift = d.holdout;
    $("holdout").innerHTML = lift
      ? "<table><tr><th></th><th>events</th><th>mean reward</th></tr>" +
        `<tr><td>loop</td><td>${lift.loop.events}</td><td>${fmt(lift.loop.meanReward, 4)}</td></tr>` +
        `<tr><td>holdout</td><td>${lift.holdout.events}</td><td>${fmt(lift.holdout.meanReward, 4)}</td></tr>` +
        (lift.estimable === false
          ? `</table><p>lift not estimable: ${esc(lift.reason)}</p>`
          : `</table><p>lift <b>${fmt(lift.lift, 4)}</b>, 95% interval [${fmt(lift.low, 4)}, ${fmt(lift.high, 4)}]</p>`)
      : "no holdout group (holdoutPercentage 0)";

    $("evaluations").innerHTML = d.evaluations.length
      ? d.evaluations
          .map(
            (e) =>
              `<p><b>${esc(e.name)}</b> · ${esc(e.status)} · ${esc(e.created)}${e.optimalPolicy ? ` · best: <b>${esc(e.optimalPolicy)}</b>` : ""}${e.error ? ` · ${esc(e.error)}` : ""}</p>` +
              (e.policies.length
                ? "<table><tr><th>policy</th><th>source</th><th>expected reward</th><th>95% interval</th><th>events</th></tr>" +
                  e.policies.map((p) => `<tr><td>${esc(p.name)}</td><td>${esc(p.source)}</td>${estimateCells(p)}<td>${p.events ?? "–"}</td></tr>`).join("") +
                  "</table>"
                : ""),
          )
          .join("")
      : "none yet";

    $("importances").innerHTML = d.featureImportances.length
      ? d.featureImportances
          .slice(0, 1)
          .map(
            (f) =>
              `<p><b>${esc(f.name)}</b> · ${esc(f.status)} · ${esc(f.created)}</p><table><tr><th>namespace</th><th>feature</th><th>score</th><th></th></tr>` +
              f.featureScores.map((x) => `<tr><td>${esc(x.namespace)}</td><td>${esc(x.featureName)}</td><td>${fmt(x.score, 3)}</td><td style="width:40%"><div class="bar" style="width:${Math.round(100 * (x.score || 0))}%"></div></td></tr>`).join("") +
              "</table>",
          )
          .join("")
      : "none yet";

    $("configuration").textContent = JSON.stringify({ policy: d.policy, ...d.configuration }, null, 2);

    state.points = countPoints(s.events) + countPoints(s.rewards);
    state.data = d;
    state.refreshes += 1;
    body.dataset.points = String(state.points);
    body.dataset.refreshes = String(state.refreshes);
  }

  async function refresh() {
    const minutes = $("minutes").value;
    const url = baseUrl + (baseUrl.includes("?") ? "&" : "?") + "minutes=" + minutes;
    const status = $("status");
    try {
      const res = await fetch(url, { headers: key ? { "Ocp-Apim-Subscription-Key": key } : {}, cache: "no-store" });
      if (!res.ok) {
        let msg = res.status + "";
        try {
          msg += ": " + (await res.json()).error.message;
        } catch (_) {}
        throw new Error(msg);
      }
      render(await res.json());
      status.textContent = "updated " + new Date().toLocaleTimeString();
      status.className = "status";
    } catch (err) {
      state.errors += 1;
      status.textContent = "error " + err.message;
      status.className = "status error";
    }
  }

  window.addEventListener("resize", () => {
    for (const id in state.charts) state.charts[id].setSize({ width: width($(id)), height: 220 });
  });
  $("minutes").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
