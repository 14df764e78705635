// The operator process as Program.cs builds it: health and readiness endpoints, Prometheus
// metrics with the operator's instruments, and options validated on start with a message that
// says what to fix.
using Microsoft.Extensions.Options;
using Platform.Operator.Api;
using Platform.Operator.Tests.Infrastructure;

namespace Platform.Operator.Tests;

public sealed class HostTests : IAsyncLifetime
{
    private TestCluster _cluster = null!;

    public async Task InitializeAsync() => _cluster = await TestCluster.StartAsync();

    public async Task DisposeAsync() => await _cluster.DisposeAsync();

    [Fact]
    public async Task Health_readiness_and_metrics_are_served()
    {
        await using var op = await OperatorInstance.StartAsync(_cluster, "host");
        await Models.CreateAsync(_cluster.Client, Models.New("observed", _cluster.Namespace));
        await Waiter.ModelAsync(_cluster.Client, _cluster.Namespace, "observed", m => m?.Status?.ObservedGeneration == 1);

        using var http = new HttpClient { BaseAddress = new Uri(op.Url) };
        using var health = await http.GetAsync(new Uri("/healthz", UriKind.Relative));
        Assert.Equal(System.Net.HttpStatusCode.OK, health.StatusCode);
        using var ready = await http.GetAsync(new Uri("/readyz", UriKind.Relative));
        Assert.Equal(System.Net.HttpStatusCode.OK, ready.StatusCode);
        var metrics = await http.GetStringAsync(new Uri("/metrics", UriKind.Relative));
        Assert.Contains("platform_operator_reconciles", metrics, StringComparison.Ordinal);
        Assert.Contains("platform_operator_child_writes", metrics, StringComparison.Ordinal);
        Assert.Contains("platform_operator_leader 1", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Invalid_options_stop_the_start_with_a_fix_it_message()
    {
        var ex = await Assert.ThrowsAsync<OptionsValidationException>(() =>
            OperatorInstance.StartAsync(_cluster, "misconfigured", extraArgs: ["--Operator:RenewDeadline=00:00:05"]));
        Assert.Contains("RetryPeriod", ex.Message, StringComparison.Ordinal);
        Assert.Contains("LeaseDuration", ex.Message, StringComparison.Ordinal);
    }
}
