"""The short human summary a run prints under its row."""
from __future__ import annotations

from bench.errors import Status


def summary_text(row: dict, output: str) -> str:
    """A short human summary of the row just written."""
    if row.get("status") != Status.OK:
        head = f"{row['model'] or row.get('mode')}: status {row.get('status')}: {row.get('error')}"
        if row.get("images_per_sec_median") is None:
            return head
        return (f"{head}\n  images/sec  {row['images_per_sec_median']:.1f} median (95% CI "
                f"{row['images_per_sec_median_ci95_low']:.1f}-{row['images_per_sec_median_ci95_high']:.1f}) over "
                f"{row['timed_steps']} timed steps, flagged: the loss went non-finite")
    ms = lambda k: 1000 * row[k]  # noqa: E731
    mib = lambda k: f"{row[k] / 2**20:,.0f} MiB" if row.get(k) is not None else "n/a"  # noqa: E731
    loss = f"final loss {row['final_loss']:.4f}" if row.get("final_loss") is not None else "forward only"
    lines = [
        f"{row['model'] or 'no model'} | {row['mode']} | {row['strategy']} | {row['workers']} worker(s), {row['replicas']} replica(s) | "
        f"batch {row['per_replica_batch']}x{row['replicas']}={row['global_batch']} | {row['data']}"
        + (f" | data workers {row['data_workers'] if row.get('data_workers') is not None else 'auto'}"
           if row.get("mode") == "input" else
           f" | {row['precision']}{' xla' if row['xla'] else ''} | width {row['width']:g}"),
        f"  images/sec  {row['images_per_sec_median']:.1f} median (95% CI {row['images_per_sec_median_ci95_low']:.1f}-"
        f"{row['images_per_sec_median_ci95_high']:.1f}), {row['images_per_sec']:.1f} mean (95% CI "
        f"{row['images_per_sec_ci95_low']:.1f}-{row['images_per_sec_ci95_high']:.1f}), jitter "
        f"{row['images_per_sec_jitter']:.1f}, {row['images_per_sec_per_replica']:.1f} per replica",
        f"  step time   {ms('step_time_mean_s'):.1f} ms mean, {ms('step_time_median_s'):.1f} median, "
        f"{ms('step_time_p90_s'):.1f} p90, {ms('step_time_min_s'):.1f} min, std {ms('step_time_std_s'):.1f}"
        f" over {row['timed_steps']} timed steps"
        + (f"; {row['data_wait_ms']:.2f} ms of each waiting for input" if row.get("data_wait_ms") is not None else ""),
        f"  latency     p50 {row['latency_p50_ms']:.2f} ms, p90 {row['latency_p90_ms']:.2f}, p95 "
        f"{row['latency_p95_ms']:.2f}, p99 {row['latency_p99_ms']:.2f} per batch; "
        f"{row['latency_per_image_ms']:.3f} ms per image (p50)",
        f"  memory      peak {mib('peak_mem_bytes')} over the timed steps ({row.get('mem_source') or 'not measured'}), "
        f"process peak {mib('process_peak_mem_bytes')}, estimate {mib('mem_estimate_bytes')} (of the process)",
        f"  compile     {row['compile_s']:.2f} s    TFLOP/s {row['tflops']:.3f}    "
        f"params {row['params']:,}    GFLOPs/img {row['gflops_per_image']:.3f}    {loss}"
        if row.get("mode") != "input" else
        f"  first batch {row['compile_s']:.2f} s (the pipeline's start, timed apart); no model: the input "
        f"pipeline's own ceiling",
    ]
    if row.get("target_ci") is not None:
        lines.append(f"  target CI   the median's 95% CI half-width {row['step_time_median_ci95_rel']:.2%} of it over "
                     f"{row['timed_steps']} steps: target {row['target_ci']:.2%} "
                     f"{'met' if row.get('target_met') else 'not met by --max-steps ' + str(row['max_steps'])}; "
                     f"warmup {row['warmup_dropped']} steps ({row['warmup_rule']})")
    if row.get("images_per_joule") is not None:
        lines.append(f"  energy      {row['images_per_joule']:.2f} images/J: {row['power_mean_w']:.1f} W mean, "
                     f"{row['energy_per_step_j']:.3f} J per step ({row['energy_source']}, {row['energy_samples']} "
                     f"samples of each device over the timed steps)")
    trace = row.get("trace_dir")
    if row.get("profile_steps"):
        lines.append(f"  profiled    timed steps {row['profile_steps']} (left out of the statistics); trace in {trace} "
                     f"(tensorboard --logdir {trace}; its top ops: python -m bench.measure.traces {trace})")
    if row.get("hvd_allreduce_ms") is not None:
        lines.append(f"  timeline    per step: negotiating {row['hvd_negotiate_ms']:.2f} ms, all-reducing "
                     f"{row['hvd_allreduce_ms']:.2f} ms, queued {row['hvd_queue_ms']:.2f} ms (the timeline "
                     f"in {trace}, chrome://tracing)")
    if row.get("hvd_autotune_best"):
        lines.append(f"  autotune    best: {row['hvd_autotune_best']} (log in {trace})")
    if not row.get("gradient_sync", True):
        lines.append("  diagnostic  --no-gradient-sync: every replica stepped on its own gradients; "
                     "not a training result")
    if row.get("top1") is not None:
        ttt = row.get("time_to_target_s")
        lines.append(f"  accuracy    top-1 {row['top1']:.4f}, top-5 {row['top5']:.4f} after {row['epochs_run']} "
                     f"epoch(s)" + (f"; target reached in {ttt:.1f} s" if ttt else ""))
    lines.append(f"  row appended to {output}")
    return "\n".join(lines)
