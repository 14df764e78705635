// Unit tests of the timed and pure pieces: the autoscaling policy and its stabiliser, the
// Prometheus parser, the spec validator and the work queue (with fake time).
using Microsoft.Extensions.Time.Testing;
using Platform.Operator.Api;
using Platform.Operator.Autoscaling;
using Platform.Operator.Runtime;

namespace Platform.Operator.Tests;

public sealed class PolicyAndQueueTests
{
    private static readonly AutoscalingSpec Spec = new() { Enabled = true, MinReplicas = 1, MaxReplicas = 8, TargetQueuedPrefillTokensPerReplica = 10_000, TargetKvUtilization = 0.8 };

    [Theory]
    [InlineData(2, 0, 0.0, 1)]
    [InlineData(2, 35_000, 0.1, 4)]
    [InlineData(2, 0, 1.0, 3)]
    [InlineData(4, 1_000_000, 0.5, 8)]
    public void Recommend_takes_the_larger_need_within_bounds(int current, double queued, double kv, int expected) =>
        Assert.Equal(expected, ScalingPolicy.Recommend(current, new RouterLoad(queued, kv), Spec));

    [Fact]
    public void The_stabiliser_scales_up_at_once_but_down_only_after_the_window()
    {
        var stabilizer = new ScaleStabilizer();
        var t0 = DateTimeOffset.UnixEpoch;
        var up = TimeSpan.Zero;
        var down = TimeSpan.FromSeconds(300);
        Assert.Equal(6, stabilizer.Stabilize(t0, 6, 2, up, down));
        Assert.Equal(8, stabilizer.Stabilize(t0.AddSeconds(15), 8, 6, up, down));
        // Load drops: the recent high recommendation holds the count for the down window.
        Assert.Equal(8, stabilizer.Stabilize(t0.AddSeconds(30), 2, 8, up, down));
        Assert.Equal(8, stabilizer.Stabilize(t0.AddSeconds(314), 2, 8, up, down));
        Assert.Equal(2, stabilizer.Stabilize(t0.AddSeconds(331), 2, 8, up, down));
    }

    [Fact]
    public void A_fresh_stabiliser_waits_a_whole_down_window_before_scaling_down()
    {
        var stabilizer = new ScaleStabilizer();
        var t0 = DateTimeOffset.UnixEpoch;
        Assert.Equal(5, stabilizer.Stabilize(t0, 1, 5, TimeSpan.Zero, TimeSpan.FromSeconds(60)));
        Assert.Equal(5, stabilizer.Stabilize(t0.AddSeconds(59), 1, 5, TimeSpan.Zero, TimeSpan.FromSeconds(60)));
        Assert.Equal(1, stabilizer.Stabilize(t0.AddSeconds(61), 1, 5, TimeSpan.Zero, TimeSpan.FromSeconds(60)));
    }

    [Fact]
    public void A_scale_up_window_takes_the_lowest_recent_recommendation()
    {
        var stabilizer = new ScaleStabilizer();
        var t0 = DateTimeOffset.UnixEpoch;
        var up = TimeSpan.FromSeconds(60);
        Assert.Equal(3, stabilizer.Stabilize(t0, 3, 2, up, TimeSpan.Zero));
        Assert.Equal(3, stabilizer.Stabilize(t0.AddSeconds(10), 8, 3, up, TimeSpan.Zero));
        Assert.Equal(8, stabilizer.Stabilize(t0.AddSeconds(75), 8, 3, up, TimeSpan.Zero));
    }

    [Fact]
    public void The_stabiliser_does_not_flap_on_an_oscillating_load()
    {
        var stabilizer = new ScaleStabilizer();
        var current = 4;
        var changes = 0;
        for (var i = 0; i < 20; i++)
        {
            var next = stabilizer.Stabilize(DateTimeOffset.UnixEpoch.AddSeconds(15 * i), i % 2 == 0 ? 2 : 4, current, TimeSpan.Zero, TimeSpan.FromSeconds(300));
            changes += next != current ? 1 : 0;
            current = next;
        }

        Assert.Equal(0, changes);
        Assert.Equal(4, current);
    }

    [Fact]
    public void Prometheus_text_is_summed_and_averaged()
    {
        var reading = PrometheusRouterLoadSource.Parse("""
            # HELP platform_router_queued_prefill_tokens Queued prefill tokens by worker
            # TYPE platform_router_queued_prefill_tokens gauge
            platform_router_queued_prefill_tokens{worker="w-0"} 1200
            platform_router_queued_prefill_tokens{worker="w-1"} 800 1700000000000
            platform_router_kv_utilization{worker="w-0"} 0.5
            platform_router_kv_utilization{worker="w-1"} 0.9
            platform_router_requests_total 42
            """);
        var load = reading.Load;
        Assert.NotNull(load);
        Assert.Equal(2000, load.QueuedPrefillTokens);
        Assert.Equal(0.7, load.KvUtilization, 6);
    }

    [Fact]
    public void A_missing_contract_series_is_a_reading_that_names_it_not_a_silent_hold()
    {
        var none = PrometheusRouterLoadSource.Parse("other_metric 1\n");
        Assert.Null(none.Load);
        Assert.Equal(NoReadingReason.MissingSeries, none.Reason);
        Assert.Contains(Platform.Core.Telemetry.RouterMetricNames.QueuedPrefillTokens, none.Problem, StringComparison.Ordinal);
        Assert.Contains(Platform.Core.Telemetry.RouterMetricNames.KvUtilization, none.Problem, StringComparison.Ordinal);

        // The old router's names (router_*) do not satisfy the contract either; only the queue present is still missing the KV series.
        var half = PrometheusRouterLoadSource.Parse(Platform.Core.Telemetry.RouterMetricNames.QueuedPrefillTokens + " 5\nrouter_kv_index_blocks 3\n");
        Assert.Null(half.Load);
        Assert.Contains(Platform.Core.Telemetry.RouterMetricNames.KvUtilization, half.Problem, StringComparison.Ordinal);
        Assert.DoesNotContain(Platform.Core.Telemetry.RouterMetricNames.QueuedPrefillTokens + " and", half.Problem, StringComparison.Ordinal);
    }

    [Fact]
    public void The_validator_accepts_defaults_and_names_each_problem()
    {
        var spec = new LongContextModelSpec { Model = new ModelSpec { Source = "pvc://models/x", ServedName = "x" } };
        Assert.Empty(SpecValidator.Validate(spec));

        spec.Worker.Engine.BlockSize = 24;
        spec.Autoscaling.MinReplicas = 5;
        spec.Autoscaling.MaxReplicas = 2;
        spec.Model.Source = "s3://bucket/x";
        spec.Router.Policy = "Random";
        var errors = SpecValidator.Validate(spec);
        Assert.Equal(4, errors.Count);
        Assert.Contains(errors, e => e.Contains("blockSize (24)", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("minReplicas (5) must be <= maxReplicas (2)", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("s3://bucket/x", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("Random", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_queue_dedupes_and_never_hands_out_a_key_being_processed()
    {
        using var queue = new WorkQueue<string>(new FakeTimeProvider(), TimeSpan.FromMilliseconds(5), TimeSpan.FromSeconds(1));
        queue.Add("a");
        queue.Add("a");
        queue.Add("b");
        Assert.Equal(2, queue.Count);

        var first = await queue.TakeAsync(CancellationToken.None);
        Assert.Equal("a", first);
        queue.Add("a");
        var second = await queue.TakeAsync(CancellationToken.None);
        Assert.Equal("b", second);
        Assert.Equal(0, queue.Count);

        using var none = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queue.TakeAsync(none.Token));

        queue.Done("a");
        Assert.Equal("a", await queue.TakeAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Failures_back_off_exponentially_on_the_injected_clock()
    {
        var time = new FakeTimeProvider();
        using var queue = new WorkQueue<string>(time, TimeSpan.FromMilliseconds(5), TimeSpan.FromMilliseconds(40));
        Assert.Equal(TimeSpan.FromMilliseconds(5), queue.AddRateLimited("k"));
        Assert.Equal(TimeSpan.FromMilliseconds(10), queue.AddRateLimited("k"));
        Assert.Equal(TimeSpan.FromMilliseconds(20), queue.AddRateLimited("k"));
        Assert.Equal(TimeSpan.FromMilliseconds(40), queue.AddRateLimited("k"));
        Assert.Equal(TimeSpan.FromMilliseconds(40), queue.AddRateLimited("k"));
        Assert.Equal(0, queue.Count);

        time.Advance(TimeSpan.FromMilliseconds(4));
        Assert.Equal(0, queue.Count);
        time.Advance(TimeSpan.FromMilliseconds(1));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        Assert.Equal("k", await queue.TakeAsync(timeout.Token));

        queue.Forget("k");
        Assert.Equal(0, queue.Failures("k"));
        Assert.Equal(TimeSpan.FromMilliseconds(5), queue.AddRateLimited("k"));
    }

    [Fact]
    public void Conditions_move_lastTransitionTime_only_on_a_status_flip()
    {
        var list = new List<k8s.Models.V1Condition>();
        var t0 = DateTimeOffset.UnixEpoch;
        Assert.True(Conditions.Set(list, ConditionTypes.Ready, false, "A", "m", 1, t0));
        Assert.False(Conditions.Set(list, ConditionTypes.Ready, false, "A", "m", 1, t0.AddMinutes(1)));
        Assert.Equal(t0.UtcDateTime, list[0].LastTransitionTime);
        Assert.True(Conditions.Set(list, ConditionTypes.Ready, true, "B", "m", 2, t0.AddMinutes(2)));
        Assert.Equal(t0.AddMinutes(2).UtcDateTime, list[0].LastTransitionTime);
        Assert.Equal(2, list[0].ObservedGeneration);
    }
}
