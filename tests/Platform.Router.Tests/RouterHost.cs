// Starts the real router app (RouterApp.Build, Kestrel on 127.0.0.1:0) in the
// test process, with a short health period so joins and departures are quick.
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Platform.Router.Policies;

namespace Platform.Router.Tests;

internal sealed class RouterHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private RouterHost(WebApplication app, string address)
    {
        _app = app;
        Address = address;
        Http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) };
    }

    public string Address { get; }
    public HttpClient Http { get; }
    public IServiceProvider Services => _app.Services;
    public PrefixIndex Index => Services.GetRequiredService<PrefixIndex>();
    public WorkerPool Pool => Services.GetRequiredService<WorkerPool>();

    public static Task<RouterHost> StartAsync(string modelDir, IEnumerable<string> workers, params string[] extra) =>
        StartAsync(modelDir, workers, configure: null, extra);

    /// <summary>Starts the router on <paramref name="time"/> (e.g. a VirtualClock's) instead of the system clock.</summary>
    public static Task<RouterHost> StartAsync(string modelDir, IEnumerable<string> workers, TimeProvider time, params string[] extra) =>
        StartAsync(modelDir, workers, services => services.AddSingleton(time), extra);

    private static async Task<RouterHost> StartAsync(string modelDir, IEnumerable<string> workers, Action<IServiceCollection>? configure, string[] extra)
    {
        string[] args =
        [
            "--model", modelDir, "--workers", string.Join(",", workers), "--port", "0",
            "--Router:HealthPeriodMs", "200", "--Router:RetryBaseDelayMs", "10", "--Logging:LogLevel:Default", "Warning",
            .. extra,
        ];
        var app = RouterApp.Build(args, configure);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new RouterHost(app, address);
    }

    /// <summary>Waits until <paramref name="condition"/> holds, polling; fails the test after the timeout.</summary>
    public static async Task Eventually(Func<bool> condition, string what, int timeoutMs = 15_000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"timed out after {timeoutMs} ms waiting for: {what}");
            await Task.Delay(50);
        }
    }

    public Task WaitForWorkers(int count) => Eventually(() => Pool.Current.Available.Count == count, $"{count} workers in the pool");

    public async Task<(int Status, JsonElement Body, string? Worker)> PostAsync(string path, string json, string? session = null, string? timeoutHeader = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json") };
        if (session is not null) request.Headers.Add("x-session-id", session);
        if (timeoutHeader is not null) request.Headers.Add("x-request-timeout", timeoutHeader);
        using var response = await Http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        var body = text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
        return ((int)response.StatusCode, body, response.Headers.TryGetValues("x-platform-worker", out var v) ? v.First() : null);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5))) await _app.StopAsync(cts.Token);
        await _app.DisposeAsync();
    }
}

internal static class ErrorShape
{
    /// <summary>Asserts OpenAI's error body: {"error":{"message","type","param","code"}}.</summary>
    public static void Assert(JsonElement body, string? param = null, string? code = null)
    {
        var error = body.GetProperty("error");
        Xunit.Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Xunit.Assert.False(string.IsNullOrEmpty(error.GetProperty("type").GetString()));
        Xunit.Assert.True(error.TryGetProperty("param", out var p));
        Xunit.Assert.True(error.TryGetProperty("code", out var c));
        if (param is not null) Xunit.Assert.Equal(param, p.GetString());
        if (code is not null) Xunit.Assert.Equal(code, c.GetString());
    }
}
