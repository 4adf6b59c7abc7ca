# A rule's name and lifetime are judged by the rule check alone (core.validators.rule_problems):
# only the fields' validators and form options change; nothing in the database does.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0016_issuer_publication"),
    ]

    operations = [
        migrations.AlterField(
            model_name="rule",
            name="lifetime",
            field=models.PositiveIntegerField(blank=True, help_text="seconds, at least 60", null=True),
        ),
        migrations.AlterField(
            model_name="rule",
            name="name",
            field=models.CharField(blank=True, max_length=200),
        ),
    ]
