from rest_framework import serializers

from ..core.limits import MAX_TOKEN_BYTES


class ExchangeRequestSerializer(serializers.Serializer):
    subject_token = serializers.CharField(
        max_length=MAX_TOKEN_BYTES * 2, trim_whitespace=False, help_text="the upstream OIDC token (compact JWS)"
    )
    issuer_id = serializers.CharField(required=False, max_length=64, help_text="pin one of the tenant's issuers")
    audience = serializers.CharField(required=False, max_length=255, help_text="an audience the matching rule allows")

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: ["Unknown field."]})
        return super().to_internal_value(data)


class ExchangeResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    token_type = serializers.CharField(help_text='always "JWT"')
    expires_in = serializers.IntegerField(help_text="seconds")
    expires_at = serializers.DateTimeField(help_text="ISO 8601, UTC")
    kid = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    error_description = serializers.CharField()
