// Where the hub is and where its files are cached, from the environment as
// huggingface_hub reads it: HF_ENDPOINT (a mirror; default
// https://huggingface.co), HF_TOKEN (else the token file under HF_HOME),
// HF_HUB_CACHE (else HF_HOME/hub, else ~/.cache/huggingface/hub) and
// HF_HUB_OFFLINE (use the cache only). A cache written here is the standard
// layout, so Python tools that share HF_HOME see the same files.
namespace Platform.Core.Models.Hub;

public sealed record HubSettings(Uri Endpoint, string? Token, string CacheDirectory, bool Offline = false)
{
    public static readonly Uri DefaultEndpoint = new("https://huggingface.co/");

    /// <param name="environment">Variable lookup (tests pass their own); default: the process environment.</param>
    public static HubSettings FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string home = NonEmpty(environment("HF_HOME"))
            ?? Path.Combine(NonEmpty(environment("XDG_CACHE_HOME")) ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "huggingface");
        string cache = NonEmpty(environment("HF_HUB_CACHE")) ?? Path.Combine(home, "hub");
        string? token = NonEmpty(environment("HF_TOKEN"));
        if (token is null)
        {
            string file = NonEmpty(environment("HF_TOKEN_PATH")) ?? Path.Combine(home, "token");
            if (File.Exists(file)) token = NonEmpty(File.ReadAllText(file).Trim());
        }
        var endpoint = DefaultEndpoint;
        if (NonEmpty(environment("HF_ENDPOINT")) is { } e)
        {
            if (!Uri.TryCreate(e.EndsWith('/') ? e : e + "/", UriKind.Absolute, out var parsed) || (parsed.Scheme != "http" && parsed.Scheme != "https"))
                throw new ArgumentException($"HF_ENDPOINT is '{e}'; set it to the hub's base URL, e.g. https://huggingface.co or your mirror's https://host/.");
            endpoint = parsed;
        }
        bool offline = NonEmpty(environment("HF_HUB_OFFLINE")) is { } o && o is "1" or "true" or "TRUE" or "True" or "yes" or "ON" or "on";
        return new HubSettings(endpoint, token, cache, offline);
    }

    private static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;
}
