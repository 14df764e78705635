// The `router` benchmark's workload: groups of multi-turn conversations that share
// a long system prompt (many users of one assistant / one document), replayed
// open loop at a Poisson rate.
//
// Shape (all lengths in tokens, all tokens drawn from a seeded RNG over
// [TokenMin, TokenMax), which the caller keeps clear of special tokens):
//   group g:             system_g                      (SystemPromptTokens)
//   conversation c of g: user_c,1, answer_c,1, user_c,2, answer_c,2, ...
//                        (UserTurnTokens each; answers OutputTokens each)
//   prompt of turn t:    system_g ‖ user_1 ‖ answer_1 ‖ … ‖ answer_{t-1} ‖ user_t
// so every follow-up prompt extends the previous turn's prompt by that turn's
// answer and the next user message. The answers are part of the trace (a
// recorded conversation replayed verbatim), not the model's live output: the
// OpenAI API returns text, not token ids, and a replayed trace keeps every
// policy's prompts identical and lets the oracle simulate the very same prompts.
//
// Order: turn by turn. All conversations' first turns in a seeded shuffle, then
// all second turns in another shuffle, and so on; consecutive turns of one
// conversation are therefore about (conversations) requests apart. Arrival
// times are cumulative exponential gaps of mean 1/rate (Poisson process),
// from the same seed. The load generator still holds a follow-up until the
// previous turn has finished (a user cannot answer a reply it has not read)
// and reports how often that happened.
namespace Platform.Bench.Router;

public sealed record WorkloadOptions
{
    public int Groups { get; init; } = 8;
    public int ConversationsPerGroup { get; init; } = 4;
    public int SystemPromptTokens { get; init; } = 1024;
    public int Turns { get; init; } = 4;
    public int UserTurnTokens { get; init; } = 64;
    public int OutputTokens { get; init; } = 16;
    /// <summary>Requests per second of the Poisson arrival process.</summary>
    public double Rate { get; init; } = 1.0;
    public int Seed { get; init; } = 1;
    public int TokenMin { get; init; }
    /// <summary>Exclusive upper bound of the token ids drawn.</summary>
    public int TokenMax { get; init; } = 256;

    public IEnumerable<string> Validate()
    {
        if (Groups < 1) yield return "--groups must be at least 1.";
        if (ConversationsPerGroup < 1) yield return "--conversations-per-group must be at least 1.";
        if (SystemPromptTokens < 1) yield return "--system-prompt-tokens must be at least 1.";
        if (Turns < 1) yield return "--turns must be at least 1.";
        if (UserTurnTokens < 1) yield return "--user-tokens must be at least 1.";
        if (OutputTokens < 1) yield return "--output-tokens must be at least 1.";
        if (!(Rate > 0) || !double.IsFinite(Rate)) yield return "--rate must be a positive number of requests per second.";
        if (TokenMin < 0 || TokenMax <= TokenMin + 1) yield return "the token range must hold at least two ids.";
    }
}

/// <param name="Index">Position in arrival order.</param>
/// <param name="ArrivalSeconds">Scheduled send time after the start of the run.</param>
/// <param name="Prompt">Token ids of the whole prompt.</param>
/// <param name="PreviousTurn">Index of this conversation's previous turn, or -1 for a first turn.</param>
public sealed record WorkloadRequest(int Index, int Group, int Conversation, int Turn, double ArrivalSeconds, int[] Prompt, int MaxTokens, int PreviousTurn);

public static class SharedPrefixWorkload
{
    /// <summary>The whole trace in arrival order (groups × conversations × turns requests).</summary>
    public static IReadOnlyList<WorkloadRequest> Generate(WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        if (errors.Count > 0) throw new ArgumentException(string.Join(" ", errors), nameof(options));

        // Separate streams for content, order and arrivals, so changing the rate keeps the prompts and the order.
        var content = new Random(options.Seed);
        var order = new Random(unchecked(options.Seed * 7919 + 1));
        var arrivals = new Random(unchecked(options.Seed * 104729 + 2));

        int conversations = options.Groups * options.ConversationsPerGroup;
        var systems = new int[options.Groups][];
        for (int g = 0; g < options.Groups; g++) systems[g] = Tokens(content, options.SystemPromptTokens, options);

        // history[c] = the conversation's prompt so far (system, then user/answer pairs).
        var history = new List<int>[conversations];
        var users = new int[conversations][][];
        var answers = new int[conversations][][];
        for (int c = 0; c < conversations; c++)
        {
            history[c] = [.. systems[c / options.ConversationsPerGroup]];
            users[c] = new int[options.Turns][];
            answers[c] = new int[options.Turns][];
            for (int t = 0; t < options.Turns; t++)
            {
                users[c][t] = Tokens(content, options.UserTurnTokens, options);
                answers[c][t] = Tokens(content, options.OutputTokens, options);
            }
        }

        var requests = new List<WorkloadRequest>(conversations * options.Turns);
        var lastIndex = Enumerable.Repeat(-1, conversations).ToArray();
        double clock = 0;
        var ids = Enumerable.Range(0, conversations).ToArray();
        for (int t = 0; t < options.Turns; t++)
        {
            order.Shuffle(ids);
            foreach (int c in ids)
            {
                if (t > 0) history[c].AddRange(answers[c][t - 1]);
                history[c].AddRange(users[c][t]);
                // Exponential gap by inversion; 1 - U keeps the argument in (0, 1].
                clock += -Math.Log(1 - arrivals.NextDouble()) / options.Rate;
                int index = requests.Count;
                requests.Add(new WorkloadRequest(index, c / options.ConversationsPerGroup, c, t, clock, [.. history[c]], options.OutputTokens, lastIndex[c]));
                lastIndex[c] = index;
            }
        }
        return requests;
    }

    /// <summary>The first requests of the trace: at most <paramref name="maxRequests"/>, arriving before <paramref name="maxSeconds"/>.</summary>
    public static IReadOnlyList<WorkloadRequest> Truncate(IReadOnlyList<WorkloadRequest> trace, int? maxRequests, double? maxSeconds)
    {
        ArgumentNullException.ThrowIfNull(trace);
        return trace.Where(r => (maxRequests is not { } n || r.Index < n) && (maxSeconds is not { } s || r.ArrivalSeconds <= s)).ToList();
    }

    private static int[] Tokens(Random rng, int count, WorkloadOptions o)
    {
        var tokens = new int[count];
        for (int i = 0; i < count; i++) tokens[i] = rng.Next(o.TokenMin, o.TokenMax);
        return tokens;
    }
}
