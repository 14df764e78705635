// HubModelSource, the `--model hf://…` step of the worker and router: a source
// resolves through the environment's HF_* settings to the cache's snapshot,
// progress comes at a log's pace (a tenth of the bytes or a period, and a last
// report at 100%), failures are HubDownloadExceptions with the fix, a local
// directory passes through, and the default served name of a hub model is the
// repo id. Without weights (the router) only configs and tokenizer files come.
// Two downloaders on one cache at once fetch each blob once.
using Platform.Core.Models;
using Platform.Core.Models.Hub;
using Platform.Testing;

namespace Platform.Core.Tests.Models;

public sealed class HubModelSourceTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "hub-source-tests-" + Guid.NewGuid().ToString("n"));
    private readonly string _model;

    public HubModelSourceTests()
    {
        _model = Path.Combine(_root, "source");
        RandomModelGenerator.Create(_model, new RandomModelOptions { Preset = "tiny", Seed = 9 });
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private Func<string, string?> Env(FakeHub hub, string? token = null, bool offline = false) => name => name switch
    {
        "HF_ENDPOINT" => hub.Endpoint.ToString(),
        "HF_HOME" => Path.Combine(_root, "hf"),
        "HF_TOKEN" => token,
        "HF_HUB_OFFLINE" => offline ? "1" : null,
        _ => null,
    };

    [Fact]
    public void The_default_served_name_is_the_repo_id_for_a_hub_model_and_the_folder_name_for_a_directory()
    {
        Assert.Equal("Qwen/Qwen2.5-7B", HubModelSource.DefaultServedName("hf://Qwen/Qwen2.5-7B@abc123"));
        Assert.Equal("tiny", HubModelSource.DefaultServedName("/models/tiny/"));
    }

    [Fact]
    public async Task A_hub_source_resolves_to_the_snapshot_with_throttled_progress_and_then_offline_from_the_cache()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/tiny");
        var reports = new List<HubDownloadProgress>();
        string snapshot = await HubModelSource.ResolveAsync("hf://acme/tiny", reports.Add, Env(hub), reportEvery: TimeSpan.FromHours(1));
        Assert.Equal(Path.Combine(_root, "hf", "hub", "models--acme--tiny", "snapshots", hub.Commit), snapshot);
        Assert.True(File.Exists(Path.Combine(snapshot, "config.json")));
        // At most one report per tenth of the bytes, and the last one at 100%.
        Assert.InRange(reports.Count, 1, 11);
        Assert.Equal(reports[^1].TotalBytes, reports[^1].Bytes);

        // Offline (the main containers in a pod): the cache alone answers, nothing is asked of the hub.
        int api = hub.Count("api");
        Assert.Equal(snapshot, await HubModelSource.ResolveAsync("hf://acme/tiny", environment: Env(hub, offline: true)));
        Assert.Equal(api, hub.Count("api"));
        Assert.Equal(_model, await HubModelSource.ResolveAsync(_model));
    }

    [Fact]
    public async Task Without_weights_only_the_configs_and_tokenizer_are_fetched()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/tiny");
        string snapshot = await HubModelSource.ResolveAsync("hf://acme/tiny", environment: Env(hub), withoutWeights: true);
        Assert.True(File.Exists(Path.Combine(snapshot, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(snapshot, "config.json")));
        Assert.False(File.Exists(Path.Combine(snapshot, "model.safetensors")));
        Assert.Equal(0, hub.Count("storage:model.safetensors"));
    }

    [Fact]
    public async Task Failures_are_hub_download_exceptions_that_say_what_to_do()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/tiny");
        hub.Token = "right";
        var refused = await Assert.ThrowsAsync<HubDownloadException>(() => HubModelSource.ResolveAsync("hf://acme/tiny", environment: Env(hub, token: "wrong")));
        Assert.Contains("HF_TOKEN", refused.Message, StringComparison.Ordinal);
        var malformed = await Assert.ThrowsAsync<HubDownloadException>(() => HubModelSource.ResolveAsync("hf://a/b/c", environment: Env(hub)));
        Assert.Contains("hf://ORG/NAME", malformed.Message, StringComparison.Ordinal);
        var offline = await Assert.ThrowsAsync<HubDownloadException>(() => HubModelSource.ResolveAsync("hf://acme/tiny", environment: Env(hub, offline: true)));
        Assert.Contains("HF_HUB_OFFLINE", offline.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Two_downloads_into_one_cache_at_once_fetch_each_blob_once()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/tiny");
        var env = Env(hub);
        var both = await Task.WhenAll(HubModelSource.ResolveAsync("hf://acme/tiny", environment: env), HubModelSource.ResolveAsync("hf://acme/tiny", environment: env));
        Assert.Equal(both[0], both[1]);
        Assert.Equal(1, hub.Count("storage:model.safetensors"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_model, "model.safetensors")), File.ReadAllBytes(Path.Combine(both[0], "model.safetensors")));
    }
}
