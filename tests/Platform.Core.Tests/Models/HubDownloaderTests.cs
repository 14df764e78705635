// hf:// downloads against FakeHub (a Hugging Face-style hub on loopback, never
// the real one): the standard cache layout, a second run that fetches nothing,
// a private repository's token (kept away from the storage host), resuming a cut
// transfer with a Range request, refusing corrupt bytes, clear errors for a wrong
// name, revision or token, HF_HUB_OFFLINE, and the environment's settings.
using Platform.Core.Models;
using Platform.Core.Models.Hub;
using Platform.Core.Tokenization;
using Platform.Testing;

namespace Platform.Core.Tests.Models;

public sealed class HubDownloaderTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "hub-tests-" + Guid.NewGuid().ToString("n"));
    private readonly string _model;

    public HubDownloaderTests()
    {
        _model = Path.Combine(_root, "source");
        RandomModelGenerator.Create(_model, new RandomModelOptions { Preset = "tiny", Seed = 5 });
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private HubDownloader Downloader(FakeHub hub, HttpClient http, string? token = null, bool offline = false) =>
        new(http, new HubSettings(hub.Endpoint, token, Path.Combine(_root, "cache"), offline));

    [Fact]
    public async Task Downloads_into_the_standard_cache_layout_and_a_second_run_fetches_nothing()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/tiny-llama");
        using var http = HubDownloader.CreateHttpClient();
        var reports = new List<HubDownloadProgress>();
        string snapshot = await Downloader(hub, http).DownloadAsync(HubModelReference.Parse("hf://acme/tiny-llama"), new SyncProgress(reports));

        string repo = Path.Combine(_root, "cache", "models--acme--tiny-llama");
        Assert.Equal(Path.Combine(repo, "snapshots", hub.Commit), snapshot);
        Assert.Equal(hub.Commit, File.ReadAllText(Path.Combine(repo, "refs", "main")));
        foreach (var file in Directory.GetFiles(_model))
        {
            string name = Path.GetFileName(file);
            var link = new FileInfo(Path.Combine(snapshot, name));
            Assert.NotNull(link.LinkTarget);
            Assert.StartsWith("../../blobs/", link.LinkTarget, StringComparison.Ordinal);
            Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(link.FullName));
        }
        Assert.False(File.Exists(Path.Combine(snapshot, "README.md")));
        Assert.False(Directory.Exists(Path.Combine(snapshot, "onnx")));
        // The weights came from the storage host, the rest from the hub; progress reached the total.
        Assert.Equal(1, hub.Count("storage:model.safetensors"));
        Assert.Equal(1, hub.Count("get:config.json"));
        Assert.Equal(reports[^1].TotalBytes, reports[^1].Bytes);
        // What the engine and router read loads from the snapshot.
        Assert.Equal(ModelConfig.Load(_model).HiddenSize, ModelConfig.Load(snapshot).HiddenSize);
        Assert.Equal(HfTokenizer.Load(_model).Encode("hello world"), HfTokenizer.Load(snapshot).Encode("hello world"));

        string again = await Downloader(hub, http).DownloadAsync(HubModelReference.Parse("hf://acme/tiny-llama@" + hub.Commit));
        Assert.Equal(snapshot, again);
        Assert.Equal(1, hub.Count("storage:model.safetensors"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_model, "model.safetensors")), File.ReadAllBytes(Path.Combine(again, "model.safetensors")));
        Assert.Equal(1, hub.Count("get:config.json"));
    }

    [Fact]
    public async Task A_private_repository_needs_the_token_which_never_reaches_the_storage_host()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/private");
        hub.Token = "hf_secret";
        using var http = HubDownloader.CreateHttpClient();
        var refused = await Assert.ThrowsAsync<HubDownloadException>(() => Downloader(hub, http).DownloadAsync(HubModelReference.Parse("hf://acme/private")));
        Assert.Contains("401", refused.Message, StringComparison.Ordinal);
        Assert.Contains("set HF_TOKEN", refused.Message, StringComparison.Ordinal);

        var wrong = await Assert.ThrowsAsync<HubDownloadException>(() => Downloader(hub, http, token: "hf_wrong").DownloadAsync(HubModelReference.Parse("hf://acme/private")));
        Assert.Contains("HF_TOKEN was refused", wrong.Message, StringComparison.Ordinal);

        // The storage host answers 400 to a forwarded Authorization header, so this passing proves it was not sent.
        string snapshot = await Downloader(hub, http, token: "hf_secret").DownloadAsync(HubModelReference.Parse("hf://acme/private"));
        Assert.True(File.Exists(Path.Combine(snapshot, "model.safetensors")));
        Assert.Equal(1, hub.Count("storage:model.safetensors"));
    }

    [Fact]
    public async Task A_cut_transfer_resumes_with_a_range_request_and_corrupt_bytes_are_refused()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/tiny");
        using var http = HubDownloader.CreateHttpClient();
        var model = HubModelReference.Parse("hf://acme/tiny");
        string blobs = Path.Combine(_root, "cache", "models--acme--tiny", "blobs");

        hub.CutNextTransfer = ("model.safetensors", 10_000);
        var cut = await Assert.ThrowsAsync<HubDownloadException>(() => Downloader(hub, http).DownloadAsync(model));
        Assert.Contains("broke at 10000 of", cut.Message, StringComparison.Ordinal);
        Assert.True(Directory.GetFiles(blobs, "*.incomplete").Length == 1, cut.ToString());
        var partial = Directory.GetFiles(blobs, "*.incomplete")[0];
        Assert.Equal(10_000, new FileInfo(partial).Length);
        string snapshot = await Downloader(hub, http).DownloadAsync(model);
        Assert.Equal(1, hub.Count("range:model.safetensors"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_model, "model.safetensors")), File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")));
        Assert.Empty(Directory.GetFiles(blobs, "*.incomplete"));

        // Corrupt bytes: refused with both hashes named, nothing kept; the next run downloads it whole and right.
        foreach (var blob in Directory.GetFiles(blobs)) File.Delete(blob);
        hub.CorruptNextTransfer = "model.safetensors";
        var corrupt = await Assert.ThrowsAsync<HubDownloadException>(() => Downloader(hub, http).DownloadAsync(model));
        Assert.Contains("corrupt", corrupt.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(blobs, "*.incomplete"));
        snapshot = await Downloader(hub, http).DownloadAsync(model);
        Assert.Equal(File.ReadAllBytes(Path.Combine(_model, "model.safetensors")), File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")));
    }

    [Fact]
    public async Task Wrong_names_and_revisions_and_offline_mode_say_what_to_do()
    {
        await using var hub = await FakeHub.StartAsync(_model, "acme/tiny");
        using var http = HubDownloader.CreateHttpClient();
        var missing = await Assert.ThrowsAsync<HubDownloadException>(() => Downloader(hub, http).DownloadAsync(HubModelReference.Parse("hf://acme/other")));
        Assert.Contains("no such model or revision", missing.Message, StringComparison.Ordinal);
        var revision = await Assert.ThrowsAsync<HubDownloadException>(() => Downloader(hub, http).DownloadAsync(HubModelReference.Parse("hf://acme/tiny@v9")));
        Assert.Contains("revision 'v9'", revision.Message, StringComparison.Ordinal);

        var offlineMiss = await Assert.ThrowsAsync<HubDownloadException>(() => Downloader(hub, http, offline: true).DownloadAsync(HubModelReference.Parse("hf://acme/tiny")));
        Assert.Contains("HF_HUB_OFFLINE", offlineMiss.Message, StringComparison.Ordinal);
        string snapshot = await Downloader(hub, http).DownloadAsync(HubModelReference.Parse("hf://acme/tiny"));
        int apiCalls = hub.Count("api");
        Assert.Equal(snapshot, await Downloader(hub, http, offline: true).DownloadAsync(HubModelReference.Parse("hf://acme/tiny")));
        Assert.Equal(apiCalls, hub.Count("api"));

        using var nowhere = HubDownloader.CreateHttpClient();
        var unreachable = await Assert.ThrowsAsync<HubDownloadException>(() =>
            new HubDownloader(nowhere, new HubSettings(new Uri("http://127.0.0.1:1/"), null, Path.Combine(_root, "c2"))).DownloadAsync(HubModelReference.Parse("hf://acme/tiny")));
        Assert.Contains("cannot reach", unreachable.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("hf://Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "main")]
    [InlineData("hf://gpt2", "gpt2", "main")]
    [InlineData("hf://org/name@v1.0", "org/name", "v1.0")]
    [InlineData("hf://org/name@refs/pr/3", "org/name", "refs/pr/3")]
    public void Parses_hub_sources(string source, string repo, string revision)
    {
        var parsed = HubModelReference.Parse(source);
        Assert.Equal(repo, parsed.RepoId);
        Assert.Equal(revision, parsed.Revision);
    }

    [Theory]
    [InlineData("hf://")]
    [InlineData("hf://a/b/c")]
    [InlineData("hf://org/../x")]
    [InlineData("hf://org/na me")]
    [InlineData("hf://org/name@")]
    [InlineData("pvc://claim/x")]
    public void Refuses_malformed_sources_with_the_form_to_use(string source)
    {
        var e = Assert.Throws<ArgumentException>(() => HubModelReference.Parse(source));
        Assert.Contains("hf://ORG/NAME", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Settings_come_from_the_environment_as_huggingface_hub_reads_them()
    {
        var env = new Dictionary<string, string?> { ["HF_HOME"] = "/data/hf", ["HF_ENDPOINT"] = "https://mirror.example", ["HF_TOKEN"] = "hf_x", ["HF_HUB_OFFLINE"] = "1" };
        var settings = HubSettings.FromEnvironment(k => env.GetValueOrDefault(k));
        Assert.Equal(new Uri("https://mirror.example/"), settings.Endpoint);
        Assert.Equal("/data/hf/hub", settings.CacheDirectory);
        Assert.Equal("hf_x", settings.Token);
        Assert.True(settings.Offline);
        env["HF_HUB_CACHE"] = "/cache";
        env["HF_ENDPOINT"] = "ftp://x";
        Assert.Throws<ArgumentException>(() => HubSettings.FromEnvironment(k => env.GetValueOrDefault(k)));
        env.Remove("HF_ENDPOINT");
        Assert.Equal("/cache", HubSettings.FromEnvironment(k => env.GetValueOrDefault(k)).CacheDirectory);
    }

    private sealed class SyncProgress(List<HubDownloadProgress> reports) : IProgress<HubDownloadProgress>
    {
        public void Report(HubDownloadProgress value) => reports.Add(value);
    }
}
