// The per-worker circuit breaker's wiring (Polly, fake time): failures open it,
// placement then skips the worker until the break elapses, one probe closes it.
using Microsoft.Extensions.Time.Testing;
using Platform.Router.Configuration;
using Platform.Router.Forwarding;
using Platform.Router.Workers;
using Polly;

namespace Platform.Router.Tests;

public sealed class BreakerTests
{
    private static readonly RouterOptions Options = new()
    {
        Workers = "http://127.0.0.1:1",
        BreakerMinimumThroughput = 3,
        BreakerFailureRatio = 0.5,
        BreakerSamplingMs = 10_000,
        BreakerBreakMs = 30_000,
    };

    private static ValueTask<Outcome<AttemptResult>> Run(WorkerBreakers breakers, WorkerConnection c, ForwarderError error) =>
        breakers.For(c).ExecuteOutcomeAsync(
            static (_, e) => ValueTask.FromResult(Outcome.FromResult(e == ForwarderError.None
                ? AttemptResult.Final(ForwarderError.None, "")
                : AttemptResult.Failed(e, "injected"))),
            ResilienceContextPool.Shared.Get(), error);

    [Fact]
    public async Task Failures_open_the_breaker_for_the_break_then_a_good_probe_closes_it()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        using var directory = new WorkerDirectory(Options);
        var breakers = new WorkerBreakers(Options, time);
        var c = directory.Connections.Single();

        for (int i = 0; i < 3; i++) await Run(breakers, c, ForwarderError.Unreachable);
        Assert.True(c.State.IsBreakerOpen(time.GetUtcNow()));

        time.Advance(TimeSpan.FromSeconds(29));
        Assert.True(c.State.IsBreakerOpen(time.GetUtcNow()));
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.False(c.State.IsBreakerOpen(time.GetUtcNow())); // placement may send the half-open probe

        var probe = await Run(breakers, c, ForwarderError.None);
        Assert.Null(probe.Exception);
        for (int i = 0; i < 2; i++) await Run(breakers, c, ForwarderError.Unreachable);
        Assert.False(c.State.IsBreakerOpen(time.GetUtcNow())); // closed again: a fresh window needs 3 attempts
    }

    [Fact]
    public async Task Client_errors_and_saturation_do_not_count_against_a_worker()
    {
        var time = new FakeTimeProvider();
        using var directory = new WorkerDirectory(Options);
        var breakers = new WorkerBreakers(Options, time);
        var c = directory.Connections.Single();
        for (int i = 0; i < 10; i++)
        {
            await Run(breakers, c, ForwarderError.Rejected);
            await Run(breakers, c, ForwarderError.Saturated);
            await Run(breakers, c, ForwarderError.Canceled);
        }
        Assert.False(c.State.IsBreakerOpen(time.GetUtcNow()));
    }
}
