// OpenAI's error body, {"error":{"message","type","param","code"}}, with the
// status code that goes with it. Every failure the router answers uses this
// shape, so OpenAI client libraries surface the message unchanged.
using System.Text.Json;

namespace Platform.Router.Api;

public sealed record ApiError(int Status, string Message, string Type = ApiError.InvalidRequest, string? Param = null, string? Code = null)
{
    public const string InvalidRequest = "invalid_request_error";
    public const string Authentication = "authentication_error";
    public const string RateLimit = "rate_limit_error";
    public const string Server = "server_error";

    public static ApiError BadRequest(string message, string? param = null, string? code = null) => new(400, message, InvalidRequest, param, code);

    public void WriteBody(Utf8JsonWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteStartObject();
        w.WriteStartObject("error");
        w.WriteString("message", Message);
        w.WriteString("type", Type);
        if (Param is null) w.WriteNull("param");
        else w.WriteString("param", Param);
        if (Code is null) w.WriteNull("code");
        else w.WriteString("code", Code);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    public async Task WriteAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Response.HasStarted) return;
        context.Response.StatusCode = Status;
        context.Response.ContentType = "application/json";
        if (Status == StatusCodes.Status401Unauthorized) context.Response.Headers.WWWAuthenticate = "Bearer";
        await using var w = new Utf8JsonWriter(context.Response.Body);
        WriteBody(w);
        await w.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }
}
