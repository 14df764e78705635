// A model on a Hugging Face-style hub, as users write it: hf://ORG/NAME or
// hf://ORG/NAME@REVISION (a branch, tag or commit; default main). Parsing says
// what is wrong with a malformed source and how to write it.
namespace Platform.Core.Models.Hub;

public sealed record HubModelReference(string RepoId, string Revision)
{
    public const string Scheme = "hf://";
    public const string DefaultRevision = "main";

    public static bool IsHubSource(string? source) => source is not null && source.StartsWith(Scheme, StringComparison.Ordinal);

    /// <summary>Parses hf://ORG/NAME[@REVISION]; throws <see cref="ArgumentException"/> naming the fix.</summary>
    public static HubModelReference Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!IsHubSource(source)) throw new ArgumentException($"'{source}' is not a hub source; write hf://ORG/NAME or hf://ORG/NAME@REVISION.");
        string rest = source[Scheme.Length..];
        string revision = DefaultRevision;
        int at = rest.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            revision = rest[(at + 1)..];
            rest = rest[..at];
            if (revision.Length == 0 || revision.StartsWith('/') || revision.Contains("..", StringComparison.Ordinal) || !revision.All(c => IsRepoChar(c) || c == '/'))
                throw new ArgumentException($"'{source}' has an empty or invalid revision after '@'; write hf://ORG/NAME@main, a tag, or a commit hash.");
        }
        var parts = rest.Split('/');
        if (parts.Length is < 1 or > 2 || parts.Any(p => p.Length == 0 || !p.All(IsRepoChar) || p.StartsWith('.') || p.Contains("..", StringComparison.Ordinal)))
            throw new ArgumentException($"'{source}' is not a model id; write hf://ORG/NAME (letters, digits, '-', '_', '.'), e.g. hf://Qwen/Qwen2.5-0.5B-Instruct.");
        return new HubModelReference(rest, revision);
    }

    private static bool IsRepoChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.';

    /// <summary>The repository's folder in the hub cache: models--ORG--NAME.</summary>
    public string CacheFolderName => "models--" + RepoId.Replace("/", "--", StringComparison.Ordinal);

    public override string ToString() => Scheme + RepoId + (Revision == DefaultRevision ? "" : "@" + Revision);
}
